"""The benchmark class lists, their ontologies, and the semantic map of COCO annotations."""

from types import SimpleNamespace

import numpy as np

from fiftyone_usam.evaluation.benchmark_classes import (
    COCO_CLASSES,
    COCO_SUPERCATEGORIES,
    VOC_CLASSES,
    VOC_OFFICIAL_NAMES,
    VOC_SUPERCLASSES,
    coco_ontology,
    voc_ontology,
)
from fiftyone_usam.fiftyone_io.benchmark_files import IGNORE, coco_semantic, full_mask


def test_voc_classes_keep_the_official_ids():
    assert len(VOC_CLASSES) == len(VOC_OFFICIAL_NAMES) == 20
    assert VOC_OFFICIAL_NAMES[0] == "aeroplane" and VOC_OFFICIAL_NAMES[19] == "tvmonitor"
    renamed = {o: n for o, n in zip(VOC_OFFICIAL_NAMES, VOC_CLASSES, strict=True) if o != n}
    assert renamed == {
        "diningtable": "dining table",
        "pottedplant": "potted plant",
        "tvmonitor": "tv monitor",
    }
    assert VOC_CLASSES.index("person") + 1 == 15  # VOC's id of person


def test_voc_superclasses_partition_the_classes():
    members = [name for names in VOC_SUPERCLASSES.values() for name in names]
    assert sorted(members) == sorted(VOC_CLASSES)
    assert set(VOC_SUPERCLASSES) == {
        "animals",
        "furniture",
        "household items",
        "person",
        "transportation",
    }


def test_voc_ontology():
    plain = voc_ontology()
    assert plain.names == VOC_CLASSES and plain.superclasses() == {}
    assert "motorcycle" in plain.queries_for("motorbike")
    grouped = voc_ontology(superclasses=True)
    assert grouped.names == VOC_CLASSES
    assert {k: set(v) for k, v in grouped.superclasses().items()} == {
        k: set(v) for k, v in VOC_SUPERCLASSES.items()
    }
    assert set(grouped.to_superclasses().names) == set(VOC_SUPERCLASSES)


def test_coco_classes_and_supercategories():
    assert len(COCO_CLASSES) == len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[:3] == ("person", "bicycle", "car") and COCO_CLASSES[-1] == "toothbrush"
    members = [name for names in COCO_SUPERCATEGORIES.values() for name in names]
    assert sorted(members) == sorted(COCO_CLASSES)
    assert COCO_SUPERCATEGORIES["animal"][0] == "bird"
    assert COCO_SUPERCATEGORIES["sports"] == COCO_CLASSES[29:39]
    assert COCO_SUPERCATEGORIES["food"][-1] == "cake"
    assert coco_ontology().names == COCO_CLASSES
    assert coco_ontology(superclasses=True).spec("tv").superclass == "electronic"


def box(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_coco_semantic_smaller_wins_and_crowds_are_ignored():
    size = (20, 20)
    big = SimpleNamespace(segmentation=box(0, 0, 15, 15), iscrowd=0, category_id=5)
    small = SimpleNamespace(segmentation=box(5, 5, 10, 10), iscrowd=0, category_id=9)
    crowd = SimpleNamespace(segmentation=box(10, 10, 19, 19), iscrowd=1, category_id=5)
    empty = SimpleNamespace(segmentation=[], iscrowd=0, category_id=5)
    # small listed first, crowd last: the order in the file does not matter
    semantic = coco_semantic([small, big, crowd, empty], {5: 1, 9: 2}, size)
    big_mask, small_mask, crowd_mask = (
        full_mask(o.segmentation, size) for o in (big, small, crowd)
    )
    expected = np.zeros(size, np.uint8)
    expected[crowd_mask] = IGNORE
    expected[big_mask] = 1
    expected[small_mask] = 2
    np.testing.assert_array_equal(semantic, expected)
    assert (semantic == IGNORE).any() and (semantic == 2).sum() == small_mask.sum()
