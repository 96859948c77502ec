"""Pure conversions from predictions to FiftyOne labels (no database access)."""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.inference.postprocess import Decode, Instances, boxes_xywh
from fiftyone_usam.masks import decode_rles
from fiftyone_usam.ontology import BACKGROUND, label_name

if TYPE_CHECKING:
    import fiftyone as fo

MASK_COMPRESSION = 1  # zlib level of the masks bulk writes store (FiftyOne's own uses 6)
# the attribute of the instances' ``Detections`` naming the prompts they label (a fingerprint)
PROMPTS_FINGERPRINT = "prompts_fingerprint"


def mask_targets(classes: Sequence[str]) -> dict[int, str]:
    """The ``mask_targets`` of a semantic field: ``{0: "background", 1: classes[0], ...}``."""
    return {0: BACKGROUND, **{i + 1: name for i, name in enumerate(classes)}}


def to_segmentation(label_map: np.ndarray) -> fo.Segmentation:
    """A semantic map (`(H, W)` ints, 0 = background) as an ``fo.Segmentation``."""
    import fiftyone as fo

    return fo.Segmentation(mask=label_map)


def to_detections(
    instances: Instances,
    image_size: tuple[int, int],
    classes: Sequence[str],
    *,
    decode: Decode = "crop",
) -> fo.Detections:
    """Instances as ``fo.Detections`` with masks cropped to their boxes, as FiftyOne stores them.

    Each detection carries ``label``, ``confidence``, a relative ``bounding_box``, a boolean
    ``mask`` within the box, ``entropy`` (nats) of the mask's class distribution, and the
    instances' own ``attributes`` (a prompt's ``prompt_id``, ``prompt_label``, ...).

    Args:
        decode: ``crop`` uses the instances' crops (decoded once, inside their boxes); ``full``
            decodes whole masks and cuts them (the reference; the same labels, slower).
    """
    import fiftyone as fo

    height, width = image_size
    if decode == "full":
        boxes = boxes_xywh(instances.rles).astype(int)
        full = decode_rles(instances.rles, image_size)
        masks = [full[i, y : y + h, x : x + w] for i, (x, y, w, h) in enumerate(boxes)]
    else:
        boxes, masks = instances.boxes, list(instances.crops)
    detections = []
    for i, (x, y, w, h) in enumerate(boxes):
        detections.append(
            fo.Detection(
                label=label_name(int(instances.labels[i]), classes),
                confidence=_confidence(instances.confidences[i]),
                bounding_box=[x / width, y / height, w / width, h / height],
                mask=masks[i],
                entropy=float(instances.entropies[i]),
                **instance_attributes(instances, i, classes),
            )
        )
    return fo.Detections(detections=detections)


def segmentation_document(
    label_map: np.ndarray | None = None, mask_path: str | None = None
) -> dict[str, Any]:
    """The document ``fo.Segmentation(mask=label_map)`` (or ``mask_path=``) stores, built
    directly: what `to_segmentation(...).to_mongo()` gives, without FiftyOne's object layer."""
    from bson import Binary, ObjectId

    document: dict[str, Any] = {"_id": ObjectId(), "_cls": "Segmentation", "tags": []}
    if label_map is not None:
        document["mask"] = Binary(_serialized(label_map))
    if mask_path is not None:
        document["mask_path"] = mask_path
    return document


def detections_document(
    instances: Instances,
    image_size: tuple[int, int],
    classes: Sequence[str],
    mask_paths: Sequence[str] | None = None,
    prompts_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The document `to_detections` stores, built directly (equal to its ``to_mongo()``).

    Args:
        mask_paths: one PNG path per instance, stored instead of the masks.
        prompts_fingerprint: recorded on the ``Detections`` (the prompts they label).
    """
    from bson import Binary, ObjectId

    height, width = image_size
    detections = []
    for i, (x, y, w, h) in enumerate(instances.boxes.tolist()):
        detection: dict[str, Any] = {
            "_id": ObjectId(),
            "_cls": "Detection",
            "attributes": {},
            "tags": [],
            "label": label_name(int(instances.labels[i]), classes),
            "bounding_box": [x / width, y / height, w / width, h / height],
        }
        if mask_paths is None:
            detection["mask"] = Binary(_serialized(instances.crops[i]))
        else:
            detection["mask_path"] = mask_paths[i]
        detection["confidence"] = _confidence(instances.confidences[i])
        detection["entropy"] = float(instances.entropies[i])
        detection.update(instance_attributes(instances, i, classes))
        detections.append(detection)
    document: dict[str, Any] = {"_cls": "Detections", "detections": detections}
    if prompts_fingerprint is not None:
        document[PROMPTS_FINGERPRINT] = prompts_fingerprint
    return document


def instance_attributes(instances: Instances, i: int, classes: Sequence[str]) -> dict[str, Any]:
    """The attributes U-SAM writes on instance ``i`` besides FiftyOne's own: ``source_index``
    (its mask's flat index among the image's proposals in the store, so a correction finds its
    embedding), ``head_label`` (the labeller's label as written, so an edit by the user shows),
    then the instance's own (a prompt's ``prompt_id``, ...; a kept prompt label's
    ``head_label`` is the head's)."""
    return {
        "source_index": int(instances.sources[i]),
        "head_label": label_name(int(instances.labels[i]), classes),
        **(instances.attributes[i] if instances.attributes else {}),
    }


def _confidence(value: float) -> float | None:
    """A detection's confidence; None where there is none (NaN: the user's own label)."""
    return None if np.isnan(value) else float(value)


def _serialized(array: np.ndarray) -> bytes:
    """FiftyOne's stored form of an array (``np.save`` bytes, zlib-compressed), at zlib level
    1: what ``fiftyone.core.utils.deserialize_numpy_array`` reads, 4x faster to write than
    its default level for masks and about 1.6x larger (a few KB an image).

    The bytes compressed are exactly ``np.save``'s (its version 1.0 header, then the data in
    the header's order), built without its buffered writer: masks are small and many.
    """
    fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
    # a plain dtype (masks: bool, uint8, uint16): its descr is its ``str``
    header = _npy_header(array.shape, array.dtype.str, fortran)
    return zlib.compress(header + array.tobytes("F" if fortran else "C"), MASK_COMPRESSION)


@functools.lru_cache(maxsize=4096)
def _npy_header(shape: tuple[int, ...], descr: str, fortran: bool) -> bytes:
    """``np.save``'s header of an array of this shape, dtype and order (version 1.0)."""
    with io.BytesIO() as buffer:
        header = {"shape": shape, "fortran_order": fortran, "descr": descr}
        np.lib.format.write_array_header_1_0(buffer, header)
        return buffer.getvalue()
