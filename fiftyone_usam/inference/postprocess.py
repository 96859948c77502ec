"""Pure post-processing: thresholds, mask NMS, instances and the semantic map.

Masks travel as COCO RLE dicts (``{"size": [H, W], "counts": bytes}``) so that IoUs, boxes and
areas come from pycocotools without decoding; only kept masks are decoded, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fiftyone_usam.masks import Rle, rle_areas


@dataclass(frozen=True, eq=False)
class Instances:
    """Kept masks of one image, most confident first.

    Attributes:
        rles: ``n`` COCO RLE dicts at full image resolution.
        labels: `(n,)` int64 class ids, 1..C (0 is background and never an instance).
        confidences: `(n,)` float32, the probability of the label.
        entropies: `(n,)` float32, entropy (nats) of the mask's class distribution.
        sources: `(n,)` int64, the flat index of each mask among the image's candidates.
    """

    rles: tuple[Rle, ...]
    labels: np.ndarray
    confidences: np.ndarray
    entropies: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.rles)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of `(M, C)` probabilities: `(M,)` float32."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return (-(p * np.log(p)).sum(axis=-1)).astype(np.float32)


def threshold_candidates(
    probs: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks whose best class passes ``threshold``.

    Args:
        probs: `(M, C)` class probabilities per mask.
        threshold: minimum probability of the best class; below it a mask is background.

    Returns:
        ``(indices, labels, confidences)``: `(k,)` indices into the M masks, `(k,)` labels in
        1..C, `(k,)` their probabilities.
    """
    if probs.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.float32)
    best = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), best]
    keep = np.flatnonzero(confidence >= threshold)
    return keep, best[keep].astype(np.int64) + 1, confidence[keep].astype(np.float32)


def mask_iou(rles: Sequence[Rle]) -> np.ndarray:
    """`(n, n)` IoU between masks given as RLE (pycocotools, exact)."""
    from pycocotools import mask as mask_utils

    if not rles:
        return np.zeros((0, 0))
    return np.asarray(mask_utils.iou(list(rles), list(rles), [0] * len(rles)), dtype=np.float64)


def mask_nms(
    rles: Sequence[Rle],
    scores: np.ndarray,
    labels: np.ndarray,
    iou_threshold: float,
    *,
    class_agnostic: bool = False,
) -> np.ndarray:
    """Greedy non-maximum suppression on mask IoU (not box IoU).

    A mask is dropped when a higher-scoring kept mask overlaps it with IoU above
    ``iou_threshold`` (and, unless ``class_agnostic``, has the same label). Empty masks are
    dropped. Ties in score keep the earlier mask.

    Returns:
        `(k,)` int64 indices of the kept masks, highest score first.
    """
    if len(rles) == 0:
        return np.zeros(0, dtype=np.int64)
    areas = rle_areas(rles)
    order = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable") if areas[i] > 0]
    ious = mask_iou([rles[i] for i in order])
    kept_ranks: list[int] = []
    for rank, index in enumerate(order):
        if not any(
            ious[rank, k] > iou_threshold and (class_agnostic or labels[order[k]] == labels[index])
            for k in kept_ranks
        ):
            kept_ranks.append(rank)
    return np.asarray([order[k] for k in kept_ranks], dtype=np.int64)


def semantic_map(
    rles: Sequence[Rle], labels: np.ndarray, scores: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """Paints each pixel with the label of the most confident mask covering it.

    Args:
        rles: kept masks.
        labels: `(n,)` labels 1..C.
        scores: `(n,)` confidences; where masks overlap the higher score wins.
        image_size: `(H, W)`.

    Returns:
        `(H, W)` uint8 (uint16 past 255 classes) label map, 0 = background.
    """
    from pycocotools import mask as mask_utils

    dtype = np.uint8 if len(labels) == 0 or int(np.max(labels)) < 256 else np.uint16
    out = np.zeros(image_size, dtype=dtype)
    for i in np.argsort(np.asarray(scores), kind="stable"):  # least confident painted first
        out[mask_utils.decode(rles[int(i)]).astype(bool)] = labels[int(i)]
    return out


def boxes_xywh(rles: Sequence[Rle]) -> np.ndarray:
    """`(n, 4)` float64 tight boxes (x, y, width, height) in pixels."""
    from pycocotools import mask as mask_utils

    if not rles:
        return np.zeros((0, 4))
    return np.asarray(mask_utils.toBbox(list(rles)), dtype=np.float64).reshape(-1, 4)
