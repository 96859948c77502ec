"""Putting predictions and ground truth into one class space, by class *name*.

A head's semantic field numbers its classes in the head's order; a benchmark's ground truth in
its own (VOC's 1..20, COCO's 80). Evaluation matches classes by name (case, spaces, ``_`` and
``-`` ignored, so "potted plant" is "pottedplant"), with id 0 = background on both sides, and
counts every pixel in one aligned space: background, the predicted classes in the prediction's
order, then ground-truth classes the prediction does not know. Pure: arrays and class maps in
and out; reading FiftyOne labels is `fiftyone_usam.fiftyone_io.evaluation`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.metrics import IGNORE_INDEX
from fiftyone_usam.ontology import BACKGROUND, Ontology, load_ontology

# the name of class id 0, as in the heads' and the importers' mask_targets
FOREGROUND = "foreground"
_UNKNOWN = -1


def normalise_name(name: str) -> str:
    """The form class names are compared in: lower case without spaces, ``_`` or ``-``."""
    return re.sub(r"[\s_\-]+", "", name).lower()


@dataclass(frozen=True)
class ClassSpace:
    """The aligned classes of one evaluation, and the lookups into them.

    Attributes:
        classes: aligned class names; index = aligned id; 0 = background.
        pred_lut: raw predicted value -> aligned id (-1: a value the prediction's targets lack).
        gt_lut: raw ground-truth value -> aligned id (-1 likewise; ``IGNORE_INDEX`` stays).
        pred_only: predicted classes the ground truth never names.
        gt_only: ground-truth classes the prediction cannot predict.
        raw_targets: when both sides' ``mask_targets`` are the same (names compared as
            `normalise_name` does), those targets: FiftyOne can then evaluate the fields as
            they are; otherwise None.
    """

    classes: tuple[str, ...]
    pred_lut: np.ndarray
    gt_lut: np.ndarray
    pred_only: tuple[str, ...]
    gt_only: tuple[str, ...]
    raw_targets: dict[int, str] | None

    @property
    def num_classes(self) -> int:
        """C, background included."""
        return len(self.classes)

    def align(self, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Maps one image's raw maps into the aligned space.

        Pixels whose value either side's targets lack are set to ``IGNORE_INDEX`` in the ground
        truth (so nobody counts them, as in FiftyOne's own evaluation).

        Args:
            gt: `(H, W)` raw ground-truth values.
            pred: `(H, W)` raw predicted values, same shape.

        Returns:
            `(H, W)` aligned ground truth (int64, ``IGNORE_INDEX`` where ignored), `(H, W)`
            aligned prediction (int64), and how many pixels were ignored for unknown values.
        """
        aligned_gt = _lookup(self.gt_lut, gt)
        aligned_pred = _lookup(self.pred_lut, pred)
        unknown = (aligned_gt == _UNKNOWN) | (aligned_pred == _UNKNOWN)
        aligned_gt[unknown] = IGNORE_INDEX
        aligned_pred[aligned_pred == _UNKNOWN] = 0
        return aligned_gt, aligned_pred, int(unknown.sum())


def class_space(
    pred_targets: Mapping[int, str], gt_targets: Mapping[int, str], class_agnostic: bool = False
) -> ClassSpace:
    """Builds the aligned space of a prediction's and a ground truth's ``mask_targets``.

    Args:
        pred_targets: the predicted field's ``{value: name}``; 0 is background.
        gt_targets: the ground truth's ``{value: name}``; 0 is background; ``IGNORE_INDEX`` is
            ignored whatever it is called.
        class_agnostic: collapse every non-background class of both into ``foreground``.
    """
    pred = {int(k): v for k, v in pred_targets.items() if int(k) != 0}
    gt = {int(k): v for k, v in gt_targets.items() if int(k) not in (0, IGNORE_INDEX)}
    classes: tuple[str, ...]
    if class_agnostic:
        classes = (BACKGROUND, FOREGROUND)
        pred_ids = dict.fromkeys(pred, 1)
        gt_ids = dict.fromkeys(gt, 1)
        pred_only: tuple[str, ...] = ()
        gt_only: tuple[str, ...] = ()
    else:
        names = [BACKGROUND]
        index: dict[str, int] = {}
        for _, name in sorted(pred.items()):
            if normalise_name(name) not in index:
                index[normalise_name(name)] = len(names)
                names.append(name)
        pred_keys = set(index)
        for _, name in sorted(gt.items()):
            if normalise_name(name) not in index:
                index[normalise_name(name)] = len(names)
                names.append(name)
        gt_keys = {normalise_name(n) for n in gt.values()}
        classes = tuple(names)
        pred_ids = {k: index[normalise_name(v)] for k, v in pred.items()}
        gt_ids = {k: index[normalise_name(v)] for k, v in gt.items()}
        pred_only = tuple(n for n in names[1:] if normalise_name(n) not in gt_keys)
        gt_only = tuple(n for n in names[1:] if normalise_name(n) not in pred_keys)
    return ClassSpace(
        classes=classes,
        pred_lut=_lut({0: 0, **pred_ids}),
        gt_lut=_lut({0: 0, **gt_ids, IGNORE_INDEX: IGNORE_INDEX}),
        pred_only=pred_only,
        gt_only=gt_only,
        raw_targets=None if class_agnostic else _merged_targets(pred, gt),
    )


def paint_instances(
    masks: Sequence[np.ndarray],
    values: Sequence[int],
    crowd: Sequence[bool],
    shape: tuple[int, int],
) -> np.ndarray:
    """Paints instance masks into a semantic map.

    Crowd regions become ``IGNORE_INDEX`` first; then the other instances are painted from the
    largest (by mask area) to the smallest, so where instances overlap the smaller one (usually
    in front) stays visible, and any instance wins over a crowd region.

    Args:
        masks: `(H, W)` bool masks, one per instance.
        values: each instance's value in the map (ignored for crowds).
        crowd: whether each instance is a crowd region (as COCO's ``iscrowd``).
        shape: ``(H, W)`` of the map.

    Returns:
        `(H, W)` uint8 map, 0 = background.
    """
    out = np.zeros(shape, dtype=np.uint8)
    things = []
    for mask, value, is_crowd in zip(masks, values, crowd, strict=True):
        if is_crowd:
            out[mask] = IGNORE_INDEX
        else:
            things.append((int(mask.sum()), value, mask))
    for _, value, mask in sorted(things, key=lambda thing: -thing[0]):
        out[mask] = value
    return out


def superclass_of(groups: str | Path | Ontology) -> dict[str, str]:
    """Class name -> superclass name, from an ontology with superclasses."""
    ontology = load_ontology(groups)
    rename = {spec.name: spec.superclass for spec in ontology.classes if spec.superclass}
    if not rename:
        raise ConfigError(
            "groups: the ontology gives no superclasses (add `superclass:` to its classes)"
        )
    return {k: v for k, v in rename.items() if v is not None}


def relabelling(
    gt_targets: Mapping[int, str], pred_targets: Mapping[int, str], superclass: Mapping[str, str]
) -> dict[str, str]:
    """Ground-truth label -> the label it is scored as: its superclass if grouped, spelled as
    the prediction spells it (mAP compares label strings; "pottedplant" is "potted plant")."""
    group = {normalise_name(k): v for k, v in superclass.items()}
    spelling = {normalise_name(v): v for k, v in pred_targets.items() if k != 0}
    rename = {}
    for value, name in gt_targets.items():
        if value == 0:
            continue
        grouped = group.get(normalise_name(name), name)
        scored = spelling.get(normalise_name(grouped), grouped)
        if scored != name:
            rename[name] = scored
    return rename


def renamer(rename: Mapping[str, str]) -> Callable[[str], str]:
    """A function giving each label its new name in ``rename`` (names compared normalised)."""
    by_key = {normalise_name(k): v for k, v in rename.items()}
    return lambda name: by_key.get(normalise_name(name), name)


def is_class_agnostic(pred_targets: Mapping[int, str]) -> bool:
    """Whether a prediction's only class is ``foreground`` (as the Otsu baseline's)."""
    return [v for k, v in pred_targets.items() if k != 0] == [FOREGROUND]


def _merged_targets(pred: dict[int, str], gt: dict[int, str]) -> dict[int, str] | None:
    """Both sides' targets, when they are the same (so raw values mean the same everywhere)."""
    same = {k: normalise_name(v) for k, v in pred.items()} == {
        k: normalise_name(v) for k, v in gt.items()
    }
    return {0: BACKGROUND, **dict(sorted(pred.items()))} if same else None


def _lut(mapping: Mapping[int, int]) -> np.ndarray:
    lut = np.full(max(max(mapping) + 1, IGNORE_INDEX + 1), _UNKNOWN, dtype=np.int64)
    for raw, aligned in mapping.items():
        lut[raw] = aligned
    return lut


def _lookup(lut: np.ndarray, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values).astype(np.int64)
    inside = (values >= 0) & (values < lut.size)
    out = np.full(values.shape, _UNKNOWN, dtype=np.int64)
    out[inside] = lut[values[inside]]
    return out
