"""`import_voc`, `import_coco` and their commands, on tiny files in the VOC and COCO layouts."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fiftyone_usam.cli.benchmarks import import_coco_command, import_voc_command
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.benchmark_classes import VOC_CLASSES, voc_ontology
from fiftyone_usam.fiftyone_io.training_dataset import stored_ontology
from fiftyone_usam.stages.benchmarks import DatasetExistsError, import_coco, import_voc
from fiftyone_usam.testing.scenes import scene

CAT, DOG, PERSON = 8, 12, 15  # official VOC class ids


def voc_palette() -> list[int]:
    """VOC's colour map (the bit-interleaved one of the devkit)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def save_palette_png(array, path):
    image = Image.fromarray(array.astype(np.uint8))
    image.putpalette(voc_palette())
    assert image.mode == "P"
    image.save(path)


def plant(semantic, objects, box, class_id, instance_id):
    """A rectangular object with a 1-pixel 255 boundary ring around it, in both maps."""
    y0, x0, y1, x1 = box
    semantic[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
    objects[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
    semantic[y0:y1, x0:x1] = class_id
    objects[y0:y1, x0:x1] = instance_id


# image id -> (height, width), [(box, class id), ...]; box = (y0, x0, y1, x1)
VOC_IMAGES = {
    "2007_000001": ((30, 40), [((3, 4, 12, 20), CAT), ((15, 22, 27, 37), PERSON)]),
    "2007_000002": ((36, 28), [((2, 2, 10, 10), DOG), ((20, 5, 33, 25), DOG)]),
    "2008_000003": ((24, 24), [((5, 5, 15, 15), PERSON)]),
}


@pytest.fixture
def voc(tmp_path):
    """``tmp/VOCdevkit/VOC2012`` with 3 images: val lists the first two, train the third."""
    folder = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True)
    planted = {}
    for seed, (image_id, ((h, w), objects)) in enumerate(VOC_IMAGES.items()):
        Image.fromarray(scene(h, w, seed)).save(folder / "JPEGImages" / f"{image_id}.jpg")
        semantic, instance_map = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        for k, (box, class_id) in enumerate(objects, start=1):
            plant(semantic, instance_map, box, class_id, k)
        save_palette_png(semantic, folder / "SegmentationClass" / f"{image_id}.png")
        save_palette_png(instance_map, folder / "SegmentationObject" / f"{image_id}.png")
        planted[image_id] = semantic
    lists = folder / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "train.txt").write_text("2008_000003\n")
    (lists / "empty.txt").write_text("\n")
    return folder, planted


@pytest.fixture
def name():
    """A unique dataset name, deleted after the test."""
    import fiftyone as fo

    value = f"usam-bench-{uuid.uuid4().hex[:10]}"
    yield value
    if fo.dataset_exists(value):
        fo.delete_dataset(value)


def full_mask(detection, size):
    """A detection's mask pasted back into an `(H, W)` bool image."""
    height, width = size
    x, y, w, h = detection.bounding_box
    x0, y0 = round(x * width), round(y * height)
    out = np.zeros(size, bool)
    crop = detection.get_mask().astype(bool)
    assert crop.shape == (round(h * height), round(w * width))
    out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return out


def test_voc_palette_png_is_why_masks_are_rewritten(voc):
    """FiftyOne would read VOC's palette PNGs as colours: the importer writes index PNGs."""
    import fiftyone as fo

    folder, _ = voc
    original = fo.Segmentation(mask_path=str(folder / "SegmentationClass" / "2007_000001.png"))
    assert original.get_mask().ndim == 3


def test_import_voc_planted_semantics_instances_and_ontology(voc, name, tmp_path):
    folder, planted = voc
    masks = tmp_path / "masks"
    dataset = import_voc(folder.parent, dataset=name, split="val", masks_dir=masks)
    assert dataset.persistent and len(dataset) == 2
    assert dataset.mask_targets["ground_truth"] == {
        0: "background",
        **{i: n for i, n in enumerate(VOC_CLASSES, start=1)},
    }
    assert dataset.mask_targets["ground_truth"][16] == "potted plant"
    assert stored_ontology(dataset) == voc_ontology(superclasses=True)
    assert dataset.classes["ground_truth_instances"] == list(VOC_CLASSES)
    for sample in dataset:
        image_id = sample.voc_id
        size, objects = VOC_IMAGES[image_id]
        assert sample.tags == ["val"] and (sample.metadata.height, sample.metadata.width) == size
        assert sample.ground_truth.mask is None
        assert sample.ground_truth.mask_path == str(masks / f"{image_id}.png")
        mask = sample.ground_truth.get_mask()
        assert mask.dtype == np.uint8 and mask.ndim == 2
        np.testing.assert_array_equal(mask, planted[image_id])  # 255 boundaries kept
        detections = sample.ground_truth_instances.detections
        assert [d.label for d in detections] == [VOC_CLASSES[c - 1] for _, c in objects]
        for detection, ((y0, x0, y1, x1), _) in zip(detections, objects, strict=True):
            expected = np.zeros(size, bool)
            expected[y0:y1, x0:x1] = True
            np.testing.assert_array_equal(full_mask(detection, size), expected)


def test_import_voc_reruns_are_no_ops_and_other_imports_need_overwrite(voc, name, tmp_path):
    folder, _ = voc
    first = import_voc(folder, dataset=name, masks_dir=tmp_path / "m")
    again = import_voc(folder, dataset=name, masks_dir=tmp_path / "m")
    assert again.created_at == first.created_at and len(again) == 2
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        import_voc(folder, dataset=name, split="train", masks_dir=tmp_path / "m")
    replaced = import_voc(
        folder, dataset=name, split="train", masks_dir=tmp_path / "m", overwrite=True
    )
    assert replaced.values("voc_id") == ["2008_000003"] and replaced.count_sample_tags() == {
        "train": 1
    }
    one = import_voc(folder, dataset=name, max_samples=1, overwrite=True, masks_dir=tmp_path / "m")
    assert one.values("voc_id") == ["2007_000001"]


def test_import_voc_refuses_a_dataset_it_did_not_make(voc, name, make_dataset, image_files):
    folder, _ = voc
    make_dataset(image_files[:1], name=name)
    with pytest.raises(DatasetExistsError, match="another --dataset name"):
        import_voc(folder, dataset=name)


def test_import_voc_bad_input_teaches(voc, name, tmp_path):
    import fiftyone as fo

    folder, _ = voc
    with pytest.raises(ConfigError, match="not a PASCAL VOC 2012 folder"):
        import_voc(tmp_path / "nowhere", dataset=name)
    with pytest.raises(ConfigError, match="choose a split among empty, train, val"):
        import_voc(folder, dataset=name, split="test")
    with pytest.raises(ConfigError, match="is empty"):
        import_voc(folder, dataset=name, split="empty")
    with pytest.raises(ConfigError, match="at least 1"):
        import_voc(folder, dataset=name, max_samples=0)
    (folder / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(ConfigError, match=r"1 of 4 files are missing.*2007_000002\.jpg"):
        import_voc(folder, dataset=name)
    rgb = Image.open(folder / "SegmentationClass" / "2007_000001.png").convert("RGB")
    rgb.save(folder / "SegmentationClass" / "2007_000001.png")
    with pytest.raises(ConfigError, match="palette PNGs"):
        import_voc(folder, dataset=name, max_samples=1)
    assert not fo.dataset_exists(name)  # a failed import leaves no partial dataset


# -- COCO ----------------------------------------------------------------------------------

CATEGORIES = [
    {"id": 3, "name": "cat", "supercategory": "animal"},
    {"id": 7, "name": "potted plant", "supercategory": "furniture"},
]


def uncompressed_rle(mask):
    """COCO's uncompressed RLE (as crowds are stored in instances_val2017.json)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def rectangle(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def decoded(segmentation, size):
    from pycocotools import mask as mask_utils

    h, w = size
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    else:
        rle = mask_utils.frPyObjects(segmentation, h, w)
    return mask_utils.decode(rle).astype(bool)


@pytest.fixture
def coco(tmp_path):
    """``val/`` with 3 images and ``instances.json``: polygons, a crowd RLE, a compressed RLE."""
    from pycocotools import mask as mask_utils

    images_dir = tmp_path / "val"
    images_dir.mkdir()
    sizes = {1: (40, 50), 2: (32, 32), 3: (20, 30)}
    images, annotations, expected = [], [], {}
    for image_id, (h, w) in sizes.items():
        name = f"{image_id:012d}.jpg"
        Image.fromarray(scene(h, w, image_id)).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    crowd = np.zeros((40, 50), bool)
    crowd[30:38, 2:20] = True
    crowd[20:24, 30:40] = True  # under the cat: the cat wins
    plant = np.zeros((32, 32), bool)
    plant[4:20, 6:12] = True
    plant_rle = mask_utils.encode(np.asfortranarray(plant.astype(np.uint8)))
    plant_rle["counts"] = plant_rle["counts"].decode()
    objects = [  # (image, category, segmentation, iscrowd)
        (1, 3, rectangle(10, 5, 40, 30), 0),  # a big cat
        (1, 7, rectangle(20, 10, 30, 20), 0),  # a small plant in front of it
        (1, 3, uncompressed_rle(crowd), 1),  # a crowd of cats
        (2, 7, plant_rle, 0),  # compressed RLE
    ]
    for ann_id, (image_id, category, segmentation, iscrowd) in enumerate(objects, start=1):
        size = sizes[image_id]
        mask = crowd if iscrowd else decoded(segmentation, size) if image_id == 1 else plant
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category,
                "segmentation": segmentation,
                "area": int(mask.sum()),
                "bbox": bbox,
                "iscrowd": iscrowd,
            }
        )
    cat, small_plant = decoded(objects[0][2], (40, 50)), decoded(objects[1][2], (40, 50))
    semantic = np.zeros((40, 50), np.uint8)
    semantic[crowd] = 255
    semantic[cat] = 1
    semantic[small_plant] = 2
    expected[1] = (semantic, [("cat", cat, 0), ("potted plant", small_plant, 0), ("cat", crowd, 1)])
    expected[2] = (plant.astype(np.uint8) * 2, [("potted plant", plant, 0)])
    expected[3] = (np.zeros((20, 30), np.uint8), [])
    path = tmp_path / "instances.json"
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    path.write_text(json.dumps(data))
    return images_dir, path, expected


def test_import_coco_planted_semantics_instances_and_crowds(coco, name, tmp_path):
    import fiftyone as fo

    images_dir, annotations, expected = coco
    dataset = import_coco(images_dir, annotations, dataset=name, masks_dir=tmp_path / "m")
    assert len(dataset) == 3 and dataset.persistent
    assert dataset.mask_targets["ground_truth"] == {0: "background", 1: "cat", 2: "potted plant"}
    ontology = stored_ontology(dataset)
    assert ontology.names == ("cat", "potted plant")
    assert ontology.superclasses() == {"animal": ("cat",), "furniture": ("potted plant",)}
    for sample in dataset:
        semantic, objects = expected[sample.coco_id]
        size = semantic.shape
        mask = sample.ground_truth.get_mask()
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, semantic)
        detections = sample.ground_truth_instances.detections
        assert [(d.label, d.iscrowd) for d in detections] == [(o[0], o[2]) for o in objects]
        for detection, (_, planted, _) in zip(detections, objects, strict=True):
            np.testing.assert_array_equal(full_mask(detection, size), planted)
    again = import_coco(images_dir, annotations, dataset=name, masks_dir=tmp_path / "m")
    assert again.created_at == dataset.created_at
    two = import_coco(images_dir, annotations, dataset=name, max_samples=2, overwrite=True)
    assert two.values("coco_id") == [1, 2]
    default = Path(fo.config.default_dataset_dir) / "usam" / name / "masks"
    assert two.first().ground_truth.mask_path == str(default / "1.png")


def test_fiftyone_evaluation_ignores_255(coco, name, tmp_path):
    """255 is not a mask target, so evaluating with the field's targets leaves it out."""
    import fiftyone as fo

    images_dir, annotations, _ = coco
    dataset = import_coco(images_dir, annotations, dataset=name, masks_dir=tmp_path / "m")
    for sample in dataset:
        truth = sample.ground_truth.get_mask()
        sample["pred"] = fo.Segmentation(mask=np.where(truth == 255, 0, truth).astype(np.uint8))
        sample.save()
    targets = dataset.mask_targets["ground_truth"]
    results = dataset.evaluate_segmentations("pred", gt_field="ground_truth", mask_targets=targets)
    assert results.metrics()["accuracy"] == 1.0
    # without them FiftyOne scores every observed value, 255 included
    results = dataset.evaluate_segmentations("pred", gt_field="ground_truth")
    assert results.metrics()["accuracy"] < 1.0


def test_import_coco_bad_input_teaches(coco, name, tmp_path):
    images_dir, annotations, _ = coco
    with pytest.raises(ConfigError, match="images folder"):
        import_coco(tmp_path / "nowhere", annotations, dataset=name)
    with pytest.raises(ConfigError, match=r"instances_val2017\.json"):
        import_coco(images_dir, tmp_path / "missing.json", dataset=name)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not a COCO instances file"):
        import_coco(images_dir, broken, dataset=name)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": CATEGORIES}))
    with pytest.raises(ConfigError, match="lists no images"):
        import_coco(images_dir, empty, dataset=name)
    (images_dir / "000000000002.jpg").unlink()
    with pytest.raises(ConfigError, match=r"000000000002\.jpg"):
        import_coco(images_dir, annotations, dataset=name)


# -- CLI -----------------------------------------------------------------------------------


@pytest.fixture
def usam():
    """The ``usam`` group with the import commands in it (added here if not registered yet)."""
    from fiftyone_usam.cli import main

    added = [c for c in (import_voc_command, import_coco_command) if c.name not in main.commands]
    for command in added:
        main.add_command(command)
    runner = CliRunner()
    yield lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    for command in added:
        main.commands.pop(command.name)


def test_cli_imports_and_reports(usam, voc, coco, name, tmp_path):
    import fiftyone as fo

    folder, _ = voc
    result = usam("import-voc", folder, "--dataset", name, "--masks-dir", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert f"Dataset {name!r}: 2 images, 4 instances, 20 classes" in result.output
    result = usam("import-voc", folder, "--dataset", name, "--split", "train")
    assert result.exit_code == 1 and "--overwrite" in result.output
    images_dir, annotations, _ = coco
    result = usam(
        "import-coco", "--images-dir", images_dir, "--annotations", annotations,
        "--dataset", name, "--max-samples", 1, "--overwrite",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 images, 3 instances, 2 classes" in result.output
    assert fo.load_dataset(name).values("coco_id") == [1]


def test_cli_help_lists_library_parameters(usam):
    voc_help = usam("import-voc", "--help").output
    for option in ("ROOT", "--dataset", "--split", "--max-samples", "--overwrite", "--masks-dir"):
        assert option in voc_help
    coco_help = usam("import-coco", "--help").output
    for option in ("--images-dir", "--annotations", "--dataset", "--max-samples", "--overwrite"):
        assert option in coco_help
