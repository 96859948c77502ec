"""Putting predictions and ground truth into one class space, by class *name*.

A head's semantic field numbers its classes in the head's order; a benchmark's ground truth in
its own (VOC's 1..20, COCO's 80). Evaluation matches classes by name (case, spaces, ``_`` and
``-`` ignored, so "potted plant" is "pottedplant"), with id 0 = background on both sides, and
counts every pixel in one aligned space: background, the predicted classes in the prediction's
order, then ground-truth classes the prediction does not know.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fiftyone_usam.evaluation.metrics import IGNORE_INDEX
from fiftyone_usam.fiftyone_io.labels import BACKGROUND

if TYPE_CHECKING:
    import fiftyone as fo

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


def semantic_from_detections(
    detections: fo.Detections | None,
    frame_size: tuple[int, int],
    class_ids: Mapping[str, int],
    crowd_attribute: str = "iscrowd",
) -> np.ndarray:
    """Renders instance masks into a semantic map.

    Larger instances (by mask area) are painted first, so a smaller one lying on a larger one
    stays visible, as in the COCO importer's semantic maps;
    crowd regions (``crowd_attribute`` truthy, as in COCO) become ``IGNORE_INDEX`` wherever no
    instance covers them. Detections without a mask fill their box.

    Args:
        detections: the instances (None: an empty image).
        frame_size: ``(width, height)`` of the image.
        class_ids: label name -> id; labels not in it are ignored (``IGNORE_INDEX``).

    Returns:
        `(H, W)` uint8 map, 0 = background.
    """
    width, height = frame_size
    out = np.zeros((height, width), dtype=np.uint8)
    if detections is None:
        return out
    by_key = {normalise_name(k): v for k, v in class_ids.items()}
    dets = list(detections.detections)
    is_crowd = [bool(d.has_field(crowd_attribute) and d.get_field(crowd_attribute)) for d in dets]
    crowds = [d for d, crowd in zip(dets, is_crowd, strict=True) if crowd]
    objects = [d for d, crowd in zip(dets, is_crowd, strict=True) if not crowd]
    for det in crowds:
        region = det.to_segmentation(frame_size=frame_size, target=1).mask > 0
        out[region] = IGNORE_INDEX
    regions = [det.to_segmentation(frame_size=frame_size, target=1).mask > 0 for det in objects]
    for i in sorted(range(len(objects)), key=lambda i: -int(regions[i].sum())):
        out[regions[i]] = by_key.get(normalise_name(objects[i].label or ""), IGNORE_INDEX)
    return out


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
