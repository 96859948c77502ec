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
