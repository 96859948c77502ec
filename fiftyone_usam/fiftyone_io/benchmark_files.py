"""Reading the VOC 2012 and COCO files of the benchmarks into FiftyOne samples (see `benchmarks`).

Semantic maps are `(H, W)` uint8: 0 background, class ``i`` of the ontology is ``i + 1``,
`IGNORE` (255) for pixels no score should count (VOC's object boundaries, COCO's crowds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.alignment import paint_instances
from fiftyone_usam.evaluation.metrics import IGNORE_INDEX
from fiftyone_usam.fiftyone_io.benchmarks import INSTANCES_FIELD, SEMANTIC_FIELD
from fiftyone_usam.ontology import ClassSpec, Ontology

if TYPE_CHECKING:
    import fiftyone as fo

IGNORE = IGNORE_INDEX
_SHOWN = 5


def resolve_voc_root(root: Path) -> Path:
    """The ``VOC2012`` folder at, or inside, ``root`` (``root``, ``VOC2012``, ``VOCdevkit``)."""
    for folder in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (folder / "JPEGImages").is_dir() and (folder / "ImageSets").is_dir():
            return folder
    raise ConfigError(
        f"{root} is not a PASCAL VOC 2012 folder: expected JPEGImages/, SegmentationClass/ and "
        "ImageSets/Segmentation/ in it (or in its VOC2012/ or VOCdevkit/VOC2012/). Extract "
        "VOCtrainval_11-May-2012.tar and pass its VOCdevkit/VOC2012 folder."
    )


def voc_split_ids(folder: Path, split: str) -> list[str]:
    """The image ids listed in ``ImageSets/Segmentation/<split>.txt``, in file order."""
    lists = folder / "ImageSets" / "Segmentation"
    path = lists / f"{split}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
        raise ConfigError(
            f"no split list {path}: choose a split among "
            + (", ".join(known) if known else "(none found: is this the segmentation release?)")
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ConfigError(f"the split list {path} is empty: choose another split")
    return ids


def check_files(folder: Path, names: Sequence[str]) -> None:
    """Raises ConfigError naming the first missing files among ``folder / name``."""
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (" ..." if len(missing) > _SHOWN else "")
        raise ConfigError(
            f"{len(missing)} of {len(names)} files are missing in {folder}: {shown}. "
            "Check the folder (and that the annotations belong to these images)."
        )


def read_index_png(path: Path) -> np.ndarray:
    """A palette or grayscale PNG's pixel values (not its colours), `(H, W)` uint8."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ConfigError(
                f"{path} is a {image.mode} image, but VOC masks are palette PNGs whose pixel "
                "values are ids: use the original files, not a colour rendering of them"
            )
        return np.array(image)


def voc_instances(
    semantic: np.ndarray, objects: np.ndarray, classes: Sequence[str]
) -> list[fo.Detection]:
    """Detections of a VOC ``SegmentationObject`` map, each of its majority class.

    Args:
        semantic: `(H, W)` class ids (0 background, 1..len(classes), 255 ignore).
        objects: `(H, W)` instance ids (0 background, 1..N, 255 boundary).
        classes: class names; class id ``k`` is ``classes[k - 1]``.

    Returns:
        One detection per instance id with any classed pixel, in id order; its mask is cropped
        to its tight box.
    """
    import fiftyone as fo

    detections = []
    for instance in np.unique(objects):
        if instance in (0, IGNORE):
            continue
        region = objects == instance
        ids = semantic[region]
        ids = ids[(ids > 0) & (ids <= len(classes))]
        if ids.size:
            label = classes[int(np.bincount(ids).argmax()) - 1]
            detections.append(fo.Detection.from_mask(region, label=label))
    return detections


def voc_sample(
    folder: Path,
    image_id: str,
    masks_dir: Path,
    split: str,
    classes: Sequence[str],
    instances: bool,
) -> fo.Sample:
    """One VOC image as a sample: semantic map (written to ``masks_dir``) and instances."""
    import fiftyone as fo
    from PIL import Image

    image = folder / "JPEGImages" / f"{image_id}.jpg"
    semantic = read_index_png(folder / "SegmentationClass" / f"{image_id}.png")
    bad = np.setdiff1d(np.unique(semantic), [*range(len(classes) + 1), IGNORE])
    if bad.size:
        raise ConfigError(
            f"SegmentationClass/{image_id}.png holds values {bad.tolist()}, not VOC class ids "
            f"(0..{len(classes)}, {IGNORE}): is this VOC 2012's SegmentationClass folder?"
        )
    with Image.open(image) as opened:
        width, height = opened.size
    _check_size(semantic, (height, width), f"SegmentationClass/{image_id}.png", image)
    fields: dict[str, Any] = {}
    if instances:
        objects = read_index_png(folder / "SegmentationObject" / f"{image_id}.png")
        _check_size(objects, (height, width), f"SegmentationObject/{image_id}.png", image)
        fields[INSTANCES_FIELD] = fo.Detections(
            detections=voc_instances(semantic, objects, classes)
        )
    return fo.Sample(
        filepath=str(image.resolve()),
        tags=[split],
        voc_id=image_id,
        metadata=fo.ImageMetadata(width=width, height=height),
        **{SEMANTIC_FIELD: segmentation_file(semantic, masks_dir / f"{image_id}.png")},
        **fields,
    )


@dataclass(frozen=True)
class CocoFile:
    """A COCO instances file, as read by FiftyOne's COCO reader.

    Attributes:
        images: the image dicts (``id``, ``file_name``, ``width``, ``height``), file order.
        objects: image id -> its ``fiftyone.utils.coco.COCOObject`` annotations.
        classes_map: category id -> name; supercategory_map: name -> category dict.
        ontology: the categories in id order, grouped by supercategory.
        semantic_ids: category id -> its value in the semantic map (1..n, ontology order).
    """

    images: list[dict[str, Any]]
    objects: dict[int, list[Any]]
    classes_map: dict[int, str]
    supercategory_map: dict[str, dict[str, Any]]
    ontology: Ontology
    semantic_ids: dict[int, int]


def read_coco(path: Path) -> CocoFile:
    """Reads a COCO instances JSON (``images``, ``annotations``, ``categories``)."""
    import fiftyone.utils.coco as fouc

    if not path.is_file():
        raise ConfigError(
            f"annotations file {path} does not exist: pass e.g. "
            "coco/annotations/instances_val2017.json"
        )
    try:
        info, classes_map, supercategories, images, objects = fouc.load_coco_detection_annotations(
            str(path)
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is not a COCO instances file ({e})") from None
    categories = sorted(info.get("categories") or [], key=lambda c: c["id"])
    if not categories or not images:
        raise ConfigError(
            f"{path} lists no {'categories' if not categories else 'images'}: pass a COCO "
            "instances file such as instances_val2017.json"
        )
    if len(categories) >= IGNORE:
        raise ConfigError(f"{path} has {len(categories)} categories; at most 254 fit a mask")
    ontology = Ontology(
        tuple(ClassSpec(c["name"], superclass=c.get("supercategory") or None) for c in categories)
    )
    return CocoFile(
        images=list(images.values()),
        objects=dict(objects or {}),
        classes_map=classes_map,
        supercategory_map=supercategories,
        ontology=ontology,
        semantic_ids={c["id"]: i for i, c in enumerate(categories, start=1)},
    )


def coco_sample(
    coco: CocoFile, image: dict[str, Any], images_dir: Path, masks_dir: Path
) -> fo.Sample:
    """One COCO image as a sample: instances (FiftyOne's reader) and a semantic map from them."""
    import fiftyone as fo

    width, height = int(image["width"]), int(image["height"])
    objects = coco.objects.get(image["id"], [])
    for obj in objects:
        if obj.category_id not in coco.classes_map:
            raise ConfigError(
                f"annotation {obj.id} of image {image['id']} has category {obj.category_id}, "
                "which the file's categories do not list"
            )
    detections = [
        obj.to_detection((width, height), coco.classes_map, coco.supercategory_map, True)
        for obj in objects
    ]
    semantic = coco_semantic(objects, coco.semantic_ids, (height, width))
    return fo.Sample(
        filepath=str((images_dir / image["file_name"]).resolve()),
        coco_id=int(image["id"]),
        metadata=fo.ImageMetadata(width=width, height=height),
        **{
            SEMANTIC_FIELD: segmentation_file(semantic, masks_dir / f"{image['id']}.png"),
            INSTANCES_FIELD: fo.Detections(detections=[d for d in detections if d is not None]),
        },
    )


def coco_semantic(
    objects: Sequence[Any], semantic_ids: dict[int, int], size: tuple[int, int]
) -> np.ndarray:
    """The `(H, W)` uint8 semantic map of one image's COCO annotations.

    Crowd regions are painted `IGNORE` first; then the other instances from the largest to the
    smallest, so where instances overlap the smaller one (usually in front) wins, and any
    instance wins over a crowd region (see `paint_instances`).
    """
    masks = [(obj, full_mask(obj.segmentation, size)) for obj in objects]
    drawn = [(obj, mask) for obj, mask in masks if mask is not None]
    return paint_instances(
        [mask for _, mask in drawn],
        [0 if obj.iscrowd else semantic_ids[obj.category_id] for obj, _ in drawn],
        [bool(obj.iscrowd) for obj, _ in drawn],
        size,
    )


def full_mask(segmentation: Any, size: tuple[int, int]) -> np.ndarray | None:
    """A COCO ``segmentation`` (polygons, RLE or uncompressed RLE) as an `(H, W)` bool mask."""
    from pycocotools import mask as mask_utils

    height, width = size
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        # As FiftyOne's reader: drop empty polygons, repeat 2-point ones (a line) to be valid.
        polygons = [list(p) * 4 if len(p) == 4 else p for p in segmentation if len(p)]
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return np.asarray(mask_utils.decode(rle), dtype=bool)


def segmentation_file(semantic: np.ndarray, path: Path) -> fo.Segmentation:
    """An ``fo.Segmentation`` whose `(H, W)` uint8 map is written to ``path`` (an 8-bit PNG)."""
    import fiftyone as fo

    path.parent.mkdir(parents=True, exist_ok=True)
    label = fo.Segmentation(mask=semantic)
    label.export_mask(str(path), update=True)
    return label


def _check_size(mask: np.ndarray, size: tuple[int, int], name: str, image: Path) -> None:
    if mask.shape != size:
        raise ConfigError(
            f"{name} is {mask.shape[1]}x{mask.shape[0]} but {image.name} is "
            f"{size[1]}x{size[0]}: masks and images must come from the same VOC release"
        )
