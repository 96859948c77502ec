"""Reading SAM's prompts from a label field: the boxes of ``fo.Detections``, the points of
``fo.Keypoints`` (one prompt per label, named by the label's id).

Everything that is not a usable prompt is dealt with here, once, with a reason: boxes outside
the image are clipped (with a warning naming the sample), zero-area boxes and keypoints labels
with no points are skipped, and a sample left with no prompt is skipped and reported. A field
that does not exist, or holds another label type, is refused before anything is read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.embeddings.prompts import PromptSet
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.labels import PROMPTS_FINGERPRINT

if TYPE_CHECKING:
    import fiftyone as fo

logger = logging.getLogger(__name__)

# label type -> (prompt kind, the list attribute holding its labels)
PROMPT_TYPES = {"Detections": ("boxes", "detections"), "Keypoints": ("points", "keypoints")}
_SHOWN = 10  # sample ids a warning names before "..."


@dataclass
class FieldPrompts:
    """A view's prompts from one label field.

    Attributes:
        field: the label field.
        kind: ``boxes`` or ``points``.
        sets: sample id -> its prompts (samples with at least one usable prompt).
        skipped: sample id -> why it has no usable prompt (skipped, not an error).
        labels: prompt id -> the prompt label's own class name (None when it has none).
        warnings: what was clipped or dropped, one line per kind of problem.
    """

    field: str
    kind: str
    sets: dict[str, PromptSet] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    labels: dict[str, str | None] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def fingerprints(self) -> dict[str, str]:
        """Sample id -> the fingerprint of its prompts (`PromptSet.fingerprint`)."""
        return {i: s.fingerprint() for i, s in self.sets.items()}


def prompt_kind(view: fo.Dataset | fo.DatasetView, prompt_field: str) -> str:
    """The kind of prompts ``prompt_field`` holds (``boxes`` or ``points``).

    Raises:
        ConfigError: the field does not exist, or holds labels that are not boxes or points
            (polylines, say), naming the fields that would do.
    """
    import fiftyone as fo

    schema = view.get_field_schema(embedded_doc_type=fo.Label)
    usable = prompt_fields(view)
    hint = (
        f"Fields of this dataset that can prompt SAM: {', '.join(usable)}."
        if usable
        else "This dataset has none."
    )
    if prompt_field not in view.get_field_schema():
        raise ConfigError(
            f"the dataset has no field {prompt_field!r} to take prompts from. {hint} Prompts "
            "are the boxes of a Detections field or the points of a Keypoints field"
        )
    found = _type_name(schema.get(prompt_field))
    if found not in PROMPT_TYPES:
        raise ConfigError(
            f"field {prompt_field!r} holds {found or 'no labels'}, which cannot prompt SAM: the "
            f"supported label types are {' and '.join(PROMPT_TYPES)} (boxes and points). "
            f"{hint}"
        )
    return PROMPT_TYPES[found][0]


def prompt_fields(view: fo.Dataset | fo.DatasetView) -> list[str]:
    """The view's fields that can prompt SAM (``fo.Detections`` and ``fo.Keypoints``), sorted."""
    import fiftyone as fo

    schema = view.get_field_schema(embedded_doc_type=fo.Label)
    return sorted(n for n, f in schema.items() if _type_name(f) in PROMPT_TYPES)


def read_prompts(view: fo.Dataset | fo.DatasetView, prompt_field: str) -> FieldPrompts:
    """Every sample's prompts from ``prompt_field``, checked and in relative coordinates.

    Raises:
        ConfigError: see `prompt_kind`.
    """
    kind = prompt_kind(view, prompt_field)
    attribute = "bounding_box" if kind == "boxes" else "points"
    list_name = PROMPT_TYPES["Detections" if kind == "boxes" else "Keypoints"][1]
    base = f"{prompt_field}.{list_name}"
    ids, label_ids, coords, names = view.values(
        ["id", f"{base}.id", f"{base}.{attribute}", f"{base}.label"]
    )
    out = FieldPrompts(prompt_field, kind)
    problems: dict[str, list[str]] = {}
    for sample_id, lids, values, classes in zip(ids, label_ids, coords, names, strict=True):
        kept_ids, kept = [], []
        for lid, value, name in zip(lids or [], values or [], classes or [], strict=True):
            usable, problem = (_box if kind == "boxes" else _points)(value)
            if problem:
                problems.setdefault(problem, []).append(sample_id)
            if usable is not None:
                kept_ids.append(str(lid))
                kept.append(usable)
                out.labels[str(lid)] = name
        if kept:
            out.sets[sample_id] = PromptSet(kind, tuple(kept_ids), tuple(kept))
        else:
            out.skipped[sample_id] = _why_none(prompt_field, kind, len(lids or []))
    out.warnings = [_warning(problem, samples) for problem, samples in problems.items()]
    for line in out.warnings:
        logger.warning("%s", line)
    return out


def relabel_changed(
    view: fo.DatasetView, instances_field: str, todo: list[str], prompts: FieldPrompts
) -> list[str]:
    """``todo`` and the view's samples labelled from other prompts than theirs now (their
    instances record the fingerprint of the prompts they label), in the view's order."""
    if not view.has_field(instances_field):
        return todo
    now = prompts.fingerprints()
    ids, labelled = view.values(["id", f"{instances_field}.{PROMPTS_FINGERPRINT}"])
    wanted = set(todo) | {
        i for i, fp in zip(ids, labelled, strict=True) if fp is not None and fp != now.get(i)
    }
    return [i for i in ids if i in wanted]


def _box(value: Sequence[float] | None) -> tuple[np.ndarray | None, str | None]:
    """A relative ``[x, y, w, h]`` box clipped to the image, or None, and what was wrong."""
    if value is None or len(value) != 4 or not all(math.isfinite(v) for v in value):
        return None, "boxes without four finite coordinates were skipped"
    x, y, w, h = (float(v) for v in value)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(1.0, x + max(w, 0.0)), min(1.0, y + max(h, 0.0))
    if x1 <= x0 or y1 <= y0:
        return None, "zero-area boxes (or boxes wholly outside the image) were skipped"
    clipped = (x0, y0, x1, y1) != (x, y, x + w, y + h)
    box = np.array([x0, y0, x1 - x0, y1 - y0])
    return box, "boxes reaching outside the image were clipped to it" if clipped else None


def _points(value: Sequence[Sequence[float]] | None) -> tuple[np.ndarray | None, str | None]:
    """A keypoints label's `(k, 2)` relative points inside the image, or None, and what was
    wrong (missing points, NaN in FiftyOne, are dropped)."""
    array = np.asarray(value if value is not None else [], dtype=np.float64).reshape(-1, 2)
    finite = array[np.isfinite(array).all(axis=1)]
    inside = finite[((finite >= 0.0) & (finite <= 1.0)).all(axis=1)]
    if len(inside) == 0:
        return None, "keypoints labels with no point inside the image were skipped"
    if len(inside) < len(finite):
        return inside, "keypoints outside the image were dropped"
    return inside, None


def _why_none(prompt_field: str, kind: str, labels: int) -> str:
    if labels == 0:
        return f"no {kind} in field {prompt_field!r}: nothing to prompt SAM with"
    return (
        f"none of its {labels} label(s) in field {prompt_field!r} is a usable prompt (empty, "
        "zero-area or outside the image)"
    )


def _warning(problem: str, samples: list[str]) -> str:
    unique = list(dict.fromkeys(samples))
    shown = ", ".join(unique[:_SHOWN]) + (" ..." if len(unique) > _SHOWN else "")
    return f"{problem}: {len(samples)} in {len(unique)} sample(s) ({shown})"


def _type_name(found: Any) -> str | None:
    document = getattr(found, "document_type", None)
    return document.__name__ if document is not None else None
