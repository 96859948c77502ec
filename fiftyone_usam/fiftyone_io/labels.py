"""Pure conversions from predictions to FiftyOne labels (no database access)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fiftyone_usam.inference.postprocess import Instances, boxes_xywh
from fiftyone_usam.masks import decode_rles
from fiftyone_usam.ontology import BACKGROUND

if TYPE_CHECKING:
    import fiftyone as fo


def mask_targets(classes: Sequence[str]) -> dict[int, str]:
    """The ``mask_targets`` of a semantic field: ``{0: "background", 1: classes[0], ...}``."""
    return {0: BACKGROUND, **{i + 1: name for i, name in enumerate(classes)}}


def to_segmentation(label_map: np.ndarray) -> fo.Segmentation:
    """A semantic map (`(H, W)` ints, 0 = background) as an ``fo.Segmentation``."""
    import fiftyone as fo

    return fo.Segmentation(mask=label_map)


def to_detections(
    instances: Instances, image_size: tuple[int, int], classes: Sequence[str]
) -> fo.Detections:
    """Instances as ``fo.Detections`` with masks cropped to their boxes, as FiftyOne stores them.

    Each detection carries ``label``, ``confidence``, a relative ``bounding_box``, a boolean
    ``mask`` within the box, and ``entropy`` (nats) of the mask's class distribution.
    """
    import fiftyone as fo

    height, width = image_size
    masks = decode_rles(instances.rles, image_size)
    detections = []
    for i, (x, y, w, h) in enumerate(boxes_xywh(instances.rles).astype(int)):
        detections.append(
            fo.Detection(
                label=classes[int(instances.labels[i]) - 1],
                confidence=float(instances.confidences[i]),
                bounding_box=[x / width, y / height, w / width, h / height],
                mask=masks[i, y : y + h, x : x + w],
                entropy=float(instances.entropies[i]),
            )
        )
    return fo.Detections(detections=detections)
