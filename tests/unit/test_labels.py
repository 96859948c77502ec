import numpy as np

from fiftyone_usam.fiftyone_io.labels import mask_targets, to_detections, to_segmentation
from fiftyone_usam.inference.postprocess import Instances
from fiftyone_usam.masks import encode_masks


def test_mask_targets_are_one_based():
    assert mask_targets(["dog", "cat"]) == {0: "background", 1: "dog", 2: "cat"}


def test_detections_have_relative_boxes_and_masks_within_them():
    full = np.zeros((10, 20), bool)
    full[2:6, 4:12] = True
    full[3, 5] = False
    rle = {"size": [10, 20], "counts": encode_masks(full[..., None])[0]}
    instances = Instances(
        (rle,),
        np.array([2]),
        np.array([0.8], np.float32),
        np.array([0.3], np.float32),
        np.array([7]),
    )
    (det,) = to_detections(instances, (10, 20), ["dog", "cat"]).detections
    assert (
        det.label == "cat" and abs(det.confidence - 0.8) < 1e-6 and abs(det["entropy"] - 0.3) < 1e-6
    )
    np.testing.assert_allclose(det.bounding_box, [4 / 20, 2 / 10, 8 / 20, 4 / 10])
    assert det.mask.shape == (4, 8) and det.mask.dtype == bool
    np.testing.assert_array_equal(det.mask, full[2:6, 4:12])


def test_segmentation_keeps_the_map():
    label_map = np.array([[0, 1], [2, 0]], np.uint8)
    np.testing.assert_array_equal(to_segmentation(label_map).mask, label_map)


def _instances(rng, size, n):
    from fiftyone_usam.inference.postprocess import Instances

    masks = np.zeros((*size, n), np.uint8)
    for k in range(n):
        y, x = rng.integers(0, size[0] - 2), rng.integers(0, size[1] - 2)
        masks[y : y + rng.integers(1, 9), x : x + rng.integers(1, 12), k] = 1
    masks[0, 0, 0] = 1
    rles = tuple({"size": list(size), "counts": c} for c in encode_masks(masks))
    return Instances(
        rles,
        rng.integers(1, 3, n),
        rng.random(n).astype(np.float32),
        rng.random(n).astype(np.float32),
        np.arange(n),
    )


def _without_ids(document):
    document = dict(document)
    document.pop("_id", None)
    if "detections" in document:
        document["detections"] = [_without_ids(d) for d in document["detections"]]
    if "mask" in document:
        from fiftyone.core.utils import deserialize_numpy_array

        mask = deserialize_numpy_array(document.pop("mask"))
        document["mask"] = (mask.dtype.str, mask.shape, mask.tobytes())
    return list(document.items())  # key order too: what FiftyOne writes


def test_documents_are_what_fiftyone_stores_for_the_same_labels():
    from fiftyone_usam.fiftyone_io.labels import detections_document, segmentation_document

    rng = np.random.default_rng(0)
    instances = _instances(rng, (17, 23), 5)
    ours = detections_document(instances, (17, 23), ["dog", "cat"])
    theirs = to_detections(instances, (17, 23), ["dog", "cat"], decode="full").to_mongo()
    assert _without_ids(ours) == _without_ids(theirs)
    assert len({d["_id"] for d in ours["detections"]}) == 5
    label_map = rng.integers(0, 3, (17, 23)).astype(np.uint8)
    assert _without_ids(segmentation_document(label_map)) == _without_ids(
        to_segmentation(label_map).to_mongo()
    )


def test_documents_with_mask_paths_match_fiftyone_too():
    import fiftyone as fo

    from fiftyone_usam.fiftyone_io.labels import detections_document, segmentation_document

    instances = _instances(np.random.default_rng(1), (9, 9), 2)
    ours = detections_document(instances, (9, 9), ["dog", "cat"], ["/a.png", "/b.png"])
    theirs = to_detections(instances, (9, 9), ["dog", "cat"])
    for detection, path in zip(theirs.detections, ["/a.png", "/b.png"], strict=True):
        detection.mask, detection.mask_path = None, path
    assert _without_ids(ours) == _without_ids(theirs.to_mongo())
    assert _without_ids(segmentation_document(mask_path="/s.png")) == _without_ids(
        fo.Segmentation(mask_path="/s.png").to_mongo()
    )


def test_stored_mask_bytes_are_np_save_bytes():
    import io
    import zlib

    from fiftyone_usam.fiftyone_io.labels import _serialized

    rng = np.random.default_rng(1)
    arrays = [
        rng.random((7, 5)) > 0.5,
        rng.integers(0, 300, (4, 9)).astype(np.uint16),
        np.asfortranarray(rng.integers(0, 3, (6, 3)).astype(np.uint8)),
        (rng.random((8, 6)) > 0.5)[:, ::2],  # neither C- nor Fortran-contiguous
        np.zeros((0, 4), bool),
    ]
    for array in arrays:
        with io.BytesIO() as buffer:
            np.save(buffer, array, allow_pickle=False)
            assert zlib.decompress(_serialized(array)) == buffer.getvalue()
