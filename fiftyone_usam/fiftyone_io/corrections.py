"""A reviewer's corrections of U-SAM's instances, read from FiftyOne's own label tags.

In the App the reviewer works as usual on a ``<field>_instances`` detection:

- tags it ``usam:wrong``: it is not that class (background, or another class);
- tags it ``usam:ok``: confirmed;
- edits its label: its ``label`` then differs from the one U-SAM wrote (``head_label``; the
  ``prompt_label`` where a run kept the prompts' labels).

Each detection U-SAM writes carries ``source_index`` (its mask's flat index among the image's
proposals in the store), so a correction finds its embedding again without SAM. After the
dataset is relabelled, `restore_corrections` puts the reviewer's word back: a confirmed or
relabelled instance keeps the reviewer's label, and an instance tagged wrong is not written
again with the class the reviewer rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.datasets import root_dataset
from fiftyone_usam.fiftyone_io.labels import segmentation_document
from fiftyone_usam.fiftyone_io.writer import output_fields, recorded_run
from fiftyone_usam.files import write_text_atomic

if TYPE_CHECKING:
    import fiftyone as fo

WRONG_TAG = "usam:wrong"
OK_TAG = "usam:ok"
KINDS: tuple[str, ...] = ("ok", "wrong", "relabel")
REVIEWED = "reviewed.json"  # the reviewed instances, saved while a refine relabels


@dataclass(frozen=True)
class Correction:
    """One corrected instance.

    Attributes:
        sample_id: its sample.
        label_id: the detection's id.
        source_index: its mask's flat index among the sample's proposals in the store.
        kind: ``ok`` (confirmed), ``wrong`` (not that class) or ``relabel`` (label edited).
        label: the label now on the detection (the reviewer's, for ``ok`` and ``relabel``).
        head_label: the label U-SAM wrote.
    """

    sample_id: str
    label_id: str
    source_index: int
    kind: str
    label: str
    head_label: str


def read_corrections(view: fo.DatasetView, field: str) -> list[Correction]:
    """The corrections on the ``<field>_instances`` of the view's samples, in sample order.

    A detection tagged ``usam:wrong`` is ``wrong``; one whose label differs from the one U-SAM
    wrote (`written_label`) is ``relabel`` (whatever its tags); one tagged ``usam:ok`` is
    ``ok``.

    Raises:
        ConfigError: U-SAM did not write ``field`` on this dataset.
    """
    instances = output_fields(field)["instances"]
    run = recorded_run(root_dataset(view), field)
    if run is None or not view.has_field(instances):
        raise ConfigError(
            f"U-SAM wrote no labels under the prefix {field!r} on this dataset, so there is "
            "nothing of its own to correct: pass the --field that `usam predict` wrote (its "
            "instances are <field>_instances)"
        )
    written = written_label(run)
    base = f"{instances}.detections"
    columns = ["id", f"{base}.id", f"{base}.tags", f"{base}.label", f"{base}.head_label"]
    values = view.values([*columns, f"{base}.source_index", f"{base}.{written}"])
    out = []
    for sample_id, *columns_of_sample in zip(*values, strict=True):
        rows = zip(*(column or [] for column in columns_of_sample), strict=True)
        for label_id, tagged, label, head, source, was in rows:
            kind = _kind(tagged or [], label, was if was is not None else head)
            if kind is not None and source is not None:
                out.append(Correction(sample_id, label_id, int(source), kind, label, head))
    return out


def corrected_detections(
    view: fo.DatasetView, field: str, corrections: list[Correction]
) -> dict[str, list[dict[str, Any]]]:
    """Sample id -> its corrected detections (those of `read_corrections`), as the documents
    FiftyOne stores (masks included), to restore after a relabel. Only they are read, by
    their ids, not every instance of their samples."""
    instances = output_fields(field)["instances"]
    ids = [c.label_id for c in corrections]
    samples = view.select_labels(ids=ids, fields=instances)
    found = samples.values(["id", f"{instances}.detections"], _raw=True)
    return {i: list(docs) for i, docs in zip(*found, strict=True) if docs}


def written_label(run: dict[str, Any]) -> str:
    """The attribute holding the label U-SAM wrote on its instances: ``head_label``, or
    ``prompt_label`` for a run that kept the prompts' own labels. An edit is a ``label`` that
    differs from it."""
    return "prompt_label" if run.get("settings", {}).get("keep_prompt_labels") else "head_label"


def save_reviewed(path: Path, reviewed: dict[str, list[dict[str, Any]]]) -> None:
    """Writes the reviewed instances (`corrected_detections`) atomically, masks included."""
    from bson import json_util

    write_text_atomic(path, json_util.dumps(reviewed), fsync=True)


def load_reviewed(path: Path) -> dict[str, list[dict[str, Any]]]:
    """What `save_reviewed` wrote."""
    from bson import json_util

    loaded: dict[str, list[dict[str, Any]]] = json_util.loads(path.read_text())
    return loaded


def restore_corrections(
    view: fo.DatasetView,
    field: str,
    corrected: dict[str, list[dict[str, Any]]],
    classes: tuple[str, ...],
) -> int:
    """Puts the reviewer's word back after a relabel; returns the samples rewritten.

    Per sample: a new instance of the same mask (``source_index``) as a confirmed or relabelled
    one takes the reviewer's label and tags (the old detection is put back if the new head
    dropped that mask); a new instance of a mask tagged wrong that carries the rejected class
    again is dropped. The semantic map of a rewritten sample is painted again from its
    instances, the most confident on top (the reviewer's labels on top of all). Documents are
    read and written raw (bulk ``set_values``), as `predict` writes them.
    """
    if not corrected:
        return 0
    names = output_fields(field)
    dataset = root_dataset(view)
    samples = dataset.select(sorted(corrected))
    ids, current, semantic = samples.values(
        ["id", f"{names['instances']}.detections", names["semantic"]], _raw=True
    )
    targets = {name: k + 1 for k, name in enumerate(classes)}
    instances, maps = {}, {}
    for sample_id, detections, painted in zip(ids, current, semantic, strict=True):
        merged = _merged(list(detections or []), corrected[sample_id])
        instances[sample_id] = {"_cls": "Detections", "detections": merged}
        shape = _shape(painted) if painted else _image_shape(dataset[sample_id])
        maps[sample_id] = segmentation_document(_painted(merged, shape, targets))
    for name, values in ((names["instances"], instances), (names["semantic"], maps)):
        dataset.set_values(name, values, key_field="id", expand_schema=False, validate=False)
    return len(instances)


def _merged(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_source = {d["source_index"]: d for d in new if "source_index" in d}
    dropped: set[int] = set()
    for detection in old:
        fresh = by_source.get(detection["source_index"])
        if WRONG_TAG in detection.get("tags", []):
            if fresh is not None and fresh["label"] == detection["label"]:
                dropped.add(id(fresh))  # the class the reviewer rejected, again
            continue
        if fresh is None:
            new.append(detection)  # the reviewer's instance, kept whatever the new head says
            continue
        fresh["label"] = detection["label"]
        fresh["tags"] = sorted(set(fresh.get("tags", [])) | set(detection["tags"]) | {OK_TAG})
    return [d for d in new if id(d) not in dropped]


def _painted(
    detections: list[dict[str, Any]], shape: tuple[int, int], targets: dict[str, int]
) -> np.ndarray:
    """The `(H, W)` semantic map of detection documents: the most confident painted last, so
    on top, the reviewer's last of all; background and unknown labels are not painted."""
    from fiftyone.core.utils import deserialize_numpy_array

    def rank(d: dict[str, Any]) -> float:
        confidence = d.get("confidence")
        return 2.0 if OK_TAG in d.get("tags", []) else (1.0 if confidence is None else confidence)

    height, width = shape
    out = np.zeros(shape, np.uint8 if len(targets) < 256 else np.uint16)
    for d in sorted(detections, key=rank):
        target = targets.get(d["label"])
        if target is None or "mask" not in d:
            continue
        crop = deserialize_numpy_array(d["mask"]).astype(bool)
        x, y = round(d["bounding_box"][0] * width), round(d["bounding_box"][1] * height)
        patch = out[y : y + crop.shape[0], x : x + crop.shape[1]]
        patch[crop[: patch.shape[0], : patch.shape[1]]] = target
    return out


def _shape(segmentation: dict[str, Any]) -> tuple[int, int]:
    """The `(H, W)` of a stored semantic map (in the document, or on disk)."""
    from fiftyone.core.utils import deserialize_numpy_array

    if segmentation.get("mask") is not None:
        height, width = deserialize_numpy_array(segmentation["mask"]).shape[:2]
        return int(height), int(width)
    from PIL import Image

    with Image.open(segmentation["mask_path"]) as image:
        return image.height, image.width


def _image_shape(sample: fo.Sample) -> tuple[int, int]:
    from PIL import Image

    with Image.open(sample.filepath) as image:
        return image.height, image.width


def _kind(tags: list[str], label: str, head: str | None) -> str | None:
    if WRONG_TAG in tags:
        return "wrong"
    if head is not None and label != head:
        return "relabel"
    if OK_TAG in tags:
        return "ok"
    return None
