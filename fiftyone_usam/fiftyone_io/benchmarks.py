"""The benchmark datasets' FiftyOne side: their fields, and writing them once.

A benchmark dataset (see `fiftyone_usam.stages.benchmarks`) is persistent and holds

- ``ground_truth``: `fo.Segmentation`, a `(H, W)` uint8 class-id map (0 background, class ``i``
  of the ontology is ``i + 1``, 255 ignore) written as a single-channel PNG under ``masks_dir``
  (default ``<FiftyOne dataset dir>/usam/<dataset>/masks``) and referenced by ``mask_path``;
  the field's ``mask_targets`` are ``{0: "background", 1: ..., n: ...}``. 255 is not a target:
  pass ``mask_targets=dataset.mask_targets["ground_truth"]`` to ``evaluate_segmentations`` and
  those pixels are left out (without it FiftyOne scores every value it finds, 255 included);
- ``ground_truth_instances``: `fo.Detections` with instance masks cropped to their boxes;
- the ontology in ``dataset.info["usam_ontology"]`` (as for training datasets) and the import's
  settings in ``dataset.info["usam_source_runs"]``.

Re-running an import with the same arguments on the dataset it made returns that dataset
unchanged; any other existing dataset of that name is an error unless ``overwrite`` (which
deletes it first). A failed import deletes the partial dataset it created.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.training_dataset import (
    RUNS_KEY,
    default_images_dir,
    open_training_dataset,
    record_run,
)
from fiftyone_usam.fiftyone_io.writer import set_field_mask_targets
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.ontology import Ontology

SEMANTIC_FIELD = "ground_truth"
INSTANCES_FIELD = "ground_truth_instances"
_BATCH = 64


class DatasetExistsError(ConfigError):
    """The dataset name is taken by something other than this very import."""


def masks_dir_of(dataset: str, masks_dir: str | Path | None) -> Path:
    """Where the semantic PNGs of ``dataset`` go: ``masks_dir``, or beside FiftyOne's files.

    Raises:
        ConfigError: the dataset name is empty.
    """
    if not dataset or not dataset.strip():
        raise ConfigError("a dataset name is needed (--dataset NAME)")
    if masks_dir is not None:
        return Path(masks_dir).expanduser().resolve()
    return default_images_dir(dataset).with_name("masks")


def write_benchmark(
    name: str,
    ontology: Ontology,
    kind: str,
    settings: dict[str, Any],
    samples: Iterable[fo.Sample],
    total: int,
    summary: str,
    *,
    overwrite: bool = False,
    progress: bool | ProgressCallback | None = None,
) -> fo.Dataset:
    """Makes the dataset ``name`` from ``samples``, or returns the one this import made before.

    Args:
        name: the dataset's name.
        ontology: the classes of ``SEMANTIC_FIELD``'s ids (class ``i`` is id ``i + 1``).
        kind: the import's run kind (``import-voc``, ``import-coco``).
        settings: the import's settings; the same kind and settings make the same dataset.
        samples: the samples to add, made lazily (``total`` of them).
        summary: the run record's one line.
        overwrite: delete an existing dataset of that name first.
        progress: True for a bar, a ``(done, total)`` callable, None for FiftyOne's setting.

    Raises:
        DatasetExistsError: ``name`` exists, was not made by this import, and no overwrite.
    """
    previous = _previous_import(name, kind, settings, overwrite)
    if previous is not None:
        return previous
    dataset = open_training_dataset(name, ontology)
    bar = Progress(progress, total, desc=kind, unit="img")
    try:
        set_field_mask_targets(dataset, SEMANTIC_FIELD, ontology.names)
        dataset.classes = {**dataset.classes, INSTANCES_FIELD: list(ontology.names)}
        dataset.save()
        batch: list[fo.Sample] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == _BATCH:
                dataset.add_samples(batch, progress=False)
                bar.update(len(batch))
                batch = []
        if batch:
            dataset.add_samples(batch, progress=False)
            bar.update(len(batch))
        record_run(dataset, kind, settings, summary)
    except BaseException:
        dataset.delete()  # a partial benchmark would give wrong scores: leave nothing behind
        raise
    finally:
        bar.close()
    return dataset


def _previous_import(
    name: str, kind: str, settings: dict[str, Any], overwrite: bool
) -> fo.Dataset | None:
    """The dataset to return as it is (the same import made it), or None once the name is free."""
    import fiftyone as fo

    if not fo.dataset_exists(name):
        return None
    dataset = fo.load_dataset(name)
    if overwrite:
        dataset.delete()
        return None
    runs = dataset.info.get(RUNS_KEY) or []
    if runs and runs[-1].get("kind") == kind and runs[-1].get("settings") == settings:
        return dataset
    raise DatasetExistsError(
        f"dataset {name!r} already exists"
        + (" from another import" if runs else "")
        + ": pass --overwrite (overwrite=True) to replace it, or choose another --dataset name"
    )
