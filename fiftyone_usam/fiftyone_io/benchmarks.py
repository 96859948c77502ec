"""The paper's benchmarks as FiftyOne datasets: PASCAL VOC 2012 and COCO 2017, from local files.

Nothing is downloaded: point `import_voc` at an extracted ``VOCdevkit/VOC2012`` and
`import_coco` at ``val2017/`` and ``instances_val2017.json``. Both write a persistent dataset with

- ``ground_truth``: `fo.Segmentation`, a `(H, W)` uint8 class-id map (0 background, class ``i``
  of the ontology is ``i + 1``, 255 ignore) written as a single-channel PNG under ``masks_dir``
  (default ``<FiftyOne dataset dir>/usam/<dataset>/masks``) and referenced by ``mask_path``;
  the field's ``mask_targets`` are ``{0: "background", 1: ..., n: ...}``. 255 is not a target:
  pass ``mask_targets=dataset.mask_targets["ground_truth"]`` to ``evaluate_segmentations`` and
  those pixels are left out (without it FiftyOne scores every value it finds, 255 included);
- ``ground_truth_instances``: `fo.Detections` with instance masks cropped to their boxes;
- the ontology in ``dataset.info["usam_ontology"]`` (as for training datasets) and the import's
  settings in ``dataset.info["usam_source_runs"]``.

Re-running an import with the same arguments on the dataset it made returns that dataset
unchanged; any other existing dataset of that name is an error unless ``overwrite`` (which
deletes it first). A failed import deletes the partial dataset it created.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.benchmark_files import (
    check_files,
    coco_sample,
    read_coco,
    resolve_voc_root,
    voc_sample,
    voc_split_ids,
)
from fiftyone_usam.fiftyone_io.training_dataset import (
    RUNS_KEY,
    default_images_dir,
    open_training_dataset,
    record_run,
)
from fiftyone_usam.fiftyone_io.writer import set_field_mask_targets
from fiftyone_usam.ontology import ClassSpec, Ontology
from fiftyone_usam.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "COCO_CLASSES",
    "COCO_SUPERCATEGORIES",
    "INSTANCES_FIELD",
    "SEMANTIC_FIELD",
    "VOC_CLASSES",
    "VOC_OFFICIAL_NAMES",
    "VOC_SUPERCLASSES",
    "DatasetExistsError",
    "coco_ontology",
    "import_coco",
    "import_voc",
    "voc_ontology",
]

SEMANTIC_FIELD = "ground_truth"
INSTANCES_FIELD = "ground_truth_instances"
_BATCH = 64

# VOC's official names, index i = class id i + 1 (0 is background, 255 boundary/ignore).
VOC_OFFICIAL_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
_VOC_SPELLINGS = {
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
}
# Our labels: the official names with the three run-together ones split into words (better text
# prompts and search queries); VOC_CLASSES[i] is official class id i + 1, as VOC_OFFICIAL_NAMES[i].
VOC_CLASSES = tuple(_VOC_SPELLINGS.get(name, name) for name in VOC_OFFICIAL_NAMES)
_VOC_SYNONYMS = {
    "aeroplane": ("airplane",),
    "motorbike": ("motorcycle",),
    "sofa": ("couch",),
    "tv monitor": ("television", "computer monitor"),
    "potted plant": ("houseplant",),
}
# The five VOC superclasses of the U-SAM paper.
VOC_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "animals": ("bird", "cat", "cow", "dog", "horse", "sheep"),
    "furniture": ("chair", "dining table", "sofa"),
    "household items": ("bottle", "potted plant", "tv monitor"),
    "person": ("person",),
    "transportation": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
}

# The 80 COCO 2017 thing categories in category-id order (ids 1..90 with gaps; the semantic
# maps here number them 1..80 in this order).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COCO_SUPERCATEGORIES: dict[str, tuple[str, ...]] = {
    "person": ("person",),
    "vehicle": ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
    "outdoor": ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench"),
    "animal": COCO_CLASSES[14:24],
    "accessory": ("backpack", "umbrella", "handbag", "tie", "suitcase"),
    "sports": COCO_CLASSES[29:39],
    "kitchen": ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
    "food": COCO_CLASSES[46:56],
    "furniture": ("chair", "couch", "potted plant", "bed", "dining table", "toilet"),
    "electronic": ("tv", "laptop", "mouse", "remote", "keyboard", "cell phone"),
    "appliance": ("microwave", "oven", "toaster", "sink", "refrigerator"),
    "indoor": ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"),
}


class DatasetExistsError(ConfigError):
    """The dataset name is taken by something other than this very import."""


def voc_ontology(superclasses: bool = False) -> Ontology:
    """The 20 VOC classes in official id order (`VOC_CLASSES`), with search synonyms.

    Args:
        superclasses: also group the classes into the paper's five `VOC_SUPERCLASSES` (for
            ``train_head(superclasses=True)``, ``predict(groups=...)`` and
            ``Ontology.to_superclasses()``).
    """
    group = {name: g for g, names in VOC_SUPERCLASSES.items() for name in names}
    return Ontology(
        tuple(
            ClassSpec(
                name,
                synonyms=_VOC_SYNONYMS.get(name, ()),
                superclass=group[name] if superclasses else None,
            )
            for name in VOC_CLASSES
        )
    )


def coco_ontology(superclasses: bool = False) -> Ontology:
    """The 80 COCO classes in category-id order (`COCO_CLASSES`).

    Args:
        superclasses: also group them into COCO's 12 supercategories (`COCO_SUPERCATEGORIES`).
    """
    group = {name: g for g, names in COCO_SUPERCATEGORIES.items() for name in names}
    return Ontology(
        tuple(ClassSpec(n, superclass=group[n] if superclasses else None) for n in COCO_CLASSES)
    )


def import_voc(
    root: str | Path,
    *,
    dataset: str,
    split: str = "val",
    max_samples: int | None = None,
    overwrite: bool = False,
    masks_dir: str | Path | None = None,
    progress: bool | ProgressCallback | None = None,
) -> fo.Dataset:
    """Imports a PASCAL VOC 2012 segmentation split into a persistent FiftyOne dataset.

    Reads ``ImageSets/Segmentation/<split>.txt``, ``JPEGImages/<id>.jpg``,
    ``SegmentationClass/<id>.png`` (palette PNG: class ids 0..20, 255 boundary) and, if the
    folder exists, ``SegmentationObject/<id>.png`` (instance ids 1..N, 0 background, 255
    boundary). Each instance's class is the most common class id among its pixels. Samples are
    tagged with ``split`` and carry ``voc_id``; labels use `VOC_CLASSES` (class id = index + 1,
    as in VOC), and the stored ontology groups them into `VOC_SUPERCLASSES`.

    Args:
        root: the ``VOC2012`` folder, or the ``VOCdevkit`` folder (or its parent) holding it.
        dataset: name of the dataset to create.
        split: a split list of ``ImageSets/Segmentation``, e.g. train, val, trainval.
        max_samples: import only the first this many images of the split.
        overwrite: delete an existing dataset of that name first.
        masks_dir: where the semantic PNGs go (default: beside FiftyOne's dataset files).
        progress: True for a bar, a ``(done, total)`` callable, None for FiftyOne's setting.

    Raises:
        ConfigError: missing folders or files, an empty split, masks that are not VOC's.
        DatasetExistsError: ``dataset`` exists, was not made by this import, and no overwrite.
    """
    folder = resolve_voc_root(Path(root).expanduser())
    ids = voc_split_ids(folder, split)[: _limit(max_samples)]
    check_files(
        folder,
        [f"JPEGImages/{i}.jpg" for i in ids] + [f"SegmentationClass/{i}.png" for i in ids],
    )
    with_instances = (folder / "SegmentationObject").is_dir()
    if with_instances:
        check_files(folder, [f"SegmentationObject/{i}.png" for i in ids])
    out = _masks_dir(dataset, masks_dir)
    settings = {
        "root": str(folder.resolve()),
        "split": split,
        "max_samples": max_samples,
        "masks_dir": str(out),
    }
    samples = (voc_sample(folder, i, out, split, VOC_CLASSES, with_instances) for i in ids)
    summary = f"{len(ids)} images of VOC {split} from {folder}"
    ontology = voc_ontology(superclasses=True)
    return _import(
        dataset, ontology, "import-voc", settings, samples, len(ids), summary, overwrite, progress
    )


def import_coco(
    images_dir: str | Path,
    annotations: str | Path,
    *,
    dataset: str,
    max_samples: int | None = None,
    overwrite: bool = False,
    masks_dir: str | Path | None = None,
    progress: bool | ProgressCallback | None = None,
) -> fo.Dataset:
    """Imports COCO-format instance annotations (e.g. COCO 2017 val) into a FiftyOne dataset.

    Instances are read with FiftyOne's COCO reader (`fiftyone.utils.coco`): labels are category
    names, masks are cropped to the annotation's box, and ``iscrowd`` and ``supercategory`` are
    detection attributes (so ``evaluate_detections`` treats crowds as COCO does). The semantic
    map numbers the file's categories 1..n in category-id order (for COCO 2017, `COCO_CLASSES`);
    crowd regions are 255 (ignore) and, where instances overlap, the smaller one wins (it is
    usually in front), and any instance wins over a crowd region. Images are taken in the
    file's order; samples carry ``coco_id``; the stored ontology groups the classes into the
    file's supercategories.

    Args:
        images_dir: the folder of the images (``file_name`` is relative to it).
        annotations: the instances JSON, e.g. ``annotations/instances_val2017.json``.
        dataset, max_samples, overwrite, masks_dir, progress: as for `import_voc`.

    Raises:
        ConfigError: missing folder, file or images; a file that is not COCO instances JSON.
        DatasetExistsError: see `import_voc`.
    """
    images_dir, annotations = Path(images_dir).expanduser(), Path(annotations).expanduser()
    if not images_dir.is_dir():
        raise ConfigError(f"images folder {images_dir} does not exist: pass e.g. coco/val2017")
    coco = read_coco(annotations)
    chosen = coco.images[: _limit(max_samples)]
    check_files(images_dir, [image["file_name"] for image in chosen])
    out = _masks_dir(dataset, masks_dir)
    settings = {
        "images_dir": str(images_dir.resolve()),
        "annotations": str(annotations.resolve()),
        "max_samples": max_samples,
        "masks_dir": str(out),
    }
    samples = (coco_sample(coco, image, images_dir, out) for image in chosen)
    summary = f"{len(chosen)} images of {annotations.name} from {images_dir}"
    return _import(
        dataset,
        coco.ontology,
        "import-coco",
        settings,
        samples,
        len(chosen),
        summary,
        overwrite,
        progress,
    )


def _limit(max_samples: int | None) -> int | None:
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples must be at least 1 (got {max_samples}), or None for all")
    return max_samples


def _masks_dir(dataset: str, masks_dir: str | Path | None) -> Path:

    if not dataset or not dataset.strip():
        raise ConfigError("a dataset name is needed (--dataset NAME)")
    if masks_dir is not None:
        return Path(masks_dir).expanduser().resolve()
    return default_images_dir(dataset).with_name("masks")


def _import(
    name: str,
    ontology: Ontology,
    kind: str,
    settings: dict[str, Any],
    samples: Iterable[fo.Sample],
    total: int,
    summary: str,
    overwrite: bool,
    progress: bool | ProgressCallback | None,
) -> fo.Dataset:
    """Makes the dataset ``name`` from ``samples``, or returns the one this import made before."""

    previous = _previous_import(name, kind, settings, overwrite)
    if previous is not None:
        return previous
    dataset = open_training_dataset(name, ontology)
    bar = Progress(progress, total, desc=kind, unit="img")
    try:
        set_field_mask_targets(dataset, SEMANTIC_FIELD, ontology.names)
        dataset.classes = {**dataset.classes, INSTANCES_FIELD: list(ontology.names)}
        dataset.save()
        batch: list[fo.Sample] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == _BATCH:
                dataset.add_samples(batch, progress=False)
                bar.update(len(batch))
                batch = []
        if batch:
            dataset.add_samples(batch, progress=False)
            bar.update(len(batch))
        record_run(dataset, kind, settings, summary)
    except BaseException:
        dataset.delete()  # a partial benchmark would give wrong scores: leave nothing behind
        raise
    finally:
        bar.close()
    return dataset


def _previous_import(
    name: str, kind: str, settings: dict[str, Any], overwrite: bool
) -> fo.Dataset | None:
    """The dataset to return as it is (the same import made it), or None once the name is free."""
    import fiftyone as fo

    if not fo.dataset_exists(name):
        return None
    dataset = fo.load_dataset(name)
    if overwrite:
        dataset.delete()
        return None
    runs = dataset.info.get(RUNS_KEY) or []
    if runs and runs[-1].get("kind") == kind and runs[-1].get("settings") == settings:
        return dataset
    raise DatasetExistsError(
        f"dataset {name!r} already exists"
        + (" from another import" if runs else "")
        + ": pass --overwrite (overwrite=True) to replace it, or choose another --dataset name"
    )
