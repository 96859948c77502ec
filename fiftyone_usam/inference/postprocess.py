"""Pure post-processing: thresholds, mask NMS, instances and the semantic map.

Masks travel as COCO RLE dicts (``{"size": [H, W], "counts": bytes}``) so that IoUs, boxes and
areas come from pycocotools without decoding; only kept masks are decoded, once, and only inside
their boxes (`mask_crops`): the semantic map and the detections share those crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from fiftyone_usam.masks import Rle, decode_crops, rle_areas

Decode = Literal["crop", "full"]  # kept masks decoded in their boxes, or whole (the reference)


@dataclass(frozen=True, eq=False)
class Instances:
    """Kept masks of one image, most confident first.

    Attributes:
        rles: ``n`` COCO RLE dicts at full image resolution.
        labels: `(n,)` int64 class ids, 1..C; 0 (background) only for the mask of a user's
            prompt, which is kept whatever the head says (and never painted).
        confidences: `(n,)` float32, the probability of the label (NaN: none, for a label
            that is the prompt's own and not one of the head's classes).
        entropies: `(n,)` float32, entropy (nats) of the mask's class distribution.
        sources: `(n,)` int64, the flat index of each mask among the image's candidates.
        attributes: per instance, more attributes to write on its detection (a prompt's
            ``prompt_id`` and ``prompt_label``, ...); empty: none.
    """

    rles: tuple[Rle, ...]
    labels: np.ndarray
    confidences: np.ndarray
    entropies: np.ndarray
    sources: np.ndarray
    attributes: tuple[dict[str, Any], ...] = ()

    def __len__(self) -> int:
        return len(self.rles)

    @cached_property
    def boxes(self) -> np.ndarray:
        """`(n, 4)` int64 tight boxes (x, y, width, height) in pixels."""
        return boxes_xywh(self.rles).astype(np.int64)

    @cached_property
    def crops(self) -> tuple[np.ndarray, ...]:
        """Each mask inside its box: ``n`` `(height, width)` bool arrays, decoded once."""
        return mask_crops(self.rles, self.boxes)


def decode_instances(many: Sequence[Instances]) -> None:
    """Decodes the kept masks of many images together: their `Instances.boxes` and
    `Instances.crops`, equal to what each image's own decode gives, with one box call and one
    `decode_crops` call per image size instead of one of each per image.

    Fills what the cached properties would compute (instances already decoded are skipped).
    """
    by_size: dict[tuple[int, int], list[Instances]] = {}
    for instances in many:
        if len(instances) and "crops" not in instances.__dict__:
            by_size.setdefault(_size(instances.rles[0]), []).append(instances)
    for size, group in by_size.items():
        rles = [rle for instances in group for rle in instances.rles]
        boxes = boxes_xywh(rles).astype(np.int64)
        crops = decode_crops([_counts(rle) for rle in rles], size, boxes)
        start = 0
        for instances in group:
            end = start + len(instances)
            # the attributes `cached_property` stores (a frozen dataclass has no setattr)
            instances.__dict__["boxes"] = boxes[start:end]
            instances.__dict__["crops"] = crops[start:end]
            start = end


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
    if class_agnostic:
        groups = [order]
    else:  # masks of one label never suppress another's: IoUs only within each label
        by_label: dict[int, list[int]] = {}
        for index in order:
            by_label.setdefault(int(labels[index]), []).append(index)
        groups = list(by_label.values())
    kept: set[int] = set()
    for group in groups:
        ious = mask_iou([rles[i] for i in group])
        kept_ranks: list[int] = []
        for rank in range(len(group)):
            if not any(ious[rank, k] > iou_threshold for k in kept_ranks):
                kept_ranks.append(rank)
        kept.update(group[k] for k in kept_ranks)
    return np.asarray([i for i in order if i in kept], dtype=np.int64)


def semantic_map(
    rles: Sequence[Rle],
    labels: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    *,
    crops: tuple[np.ndarray, np.ndarray | Sequence[np.ndarray]] | None = None,
    decode: Decode = "crop",
) -> np.ndarray:
    """Paints each pixel with the label of the most confident mask covering it.

    Args:
        rles: kept masks.
        labels: `(n,)` labels 1..C.
        scores: `(n,)` confidences; where masks overlap the higher score wins (the least
            confident is painted first; NaN, a user's own label, counts as 1).
        image_size: `(H, W)`.
        crops: ``(boxes, crops)`` of the masks when already decoded (`Instances.boxes`,
            `Instances.crops`).
        decode: ``crop`` paints each mask inside its box; ``full`` decodes whole masks (the
            reference; the same map, slower).

    Returns:
        `(H, W)` uint8 (uint16 past 255 classes) label map, 0 = background. Masks labelled 0
        (a prompt's mask the head calls background) are not painted.
    """
    from pycocotools import mask as mask_utils

    if len(labels) and not np.all(np.asarray(labels) > 0):
        keep = np.flatnonzero(np.asarray(labels) > 0)
        rles, labels, scores = (
            [rles[int(i)] for i in keep],
            np.asarray(labels)[keep],
            np.asarray(scores)[keep],
        )
        if crops is not None:
            crops = (np.asarray(crops[0])[keep], [crops[1][int(i)] for i in keep])

    dtype = np.uint8 if len(labels) == 0 or int(np.max(labels)) < 256 else np.uint16
    out = np.zeros(image_size, dtype=dtype)
    if decode == "full":
        for i in np.argsort(np.nan_to_num(np.asarray(scores), nan=1.0), kind="stable"):
            out[mask_utils.decode(rles[int(i)]).astype(bool)] = labels[int(i)]
        return out
    if crops is None:
        boxes = boxes_xywh(rles).astype(np.int64)
        crops = (boxes, mask_crops(rles, boxes))
    boxes, masks = crops
    for i in np.argsort(np.nan_to_num(np.asarray(scores), nan=1.0), kind="stable"):
        x, y, w, h = (int(v) for v in boxes[int(i)])
        out[y : y + h, x : x + w][masks[int(i)]] = labels[int(i)]
    return out


def paint_instances(instances: Instances, image_size: tuple[int, int]) -> np.ndarray:
    """The semantic map of kept instances from their crops (`semantic_map`), `(H, W)`."""
    return semantic_map(
        instances.rles,
        instances.labels,
        instances.confidences,
        image_size,
        crops=(instances.boxes, instances.crops),
    )


def mask_crops(rles: Sequence[Rle], boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each RLE mask (all of one image's size) decoded inside its `(n, 4)` box (x, y, width,
    height): `(h, w)` bool."""
    if not rles:
        return ()
    return decode_crops([_counts(rle) for rle in rles], _size(rles[0]), boxes)


def boxes_xywh(rles: Sequence[Rle]) -> np.ndarray:
    """`(n, 4)` float64 tight boxes (x, y, width, height) in pixels."""
    from pycocotools import mask as mask_utils

    if not rles:
        return np.zeros((0, 4))
    return np.asarray(mask_utils.toBbox(list(rles)), dtype=np.float64).reshape(-1, 4)


def _size(rle: Rle) -> tuple[int, int]:
    size: Sequence[int] = rle["size"]  # type: ignore[assignment]
    return int(size[0]), int(size[1])


def _counts(rle: Rle) -> bytes:
    counts = rle["counts"]
    return counts.encode() if isinstance(counts, str) else counts  # type: ignore[return-value]
