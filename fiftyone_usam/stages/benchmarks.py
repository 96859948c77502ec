"""`import_voc`, `import_coco`: the paper's benchmarks as FiftyOne datasets, from local files.

Nothing is downloaded: point `import_voc` at an extracted ``VOCdevkit/VOC2012`` and
`import_coco` at ``val2017/`` and ``instances_val2017.json``. Both write a persistent dataset with
``ground_truth`` (semantic, 255 ignored) and ``ground_truth_instances`` (instances with masks),
and store the ontology with it; see `fiftyone_usam.fiftyone_io.benchmarks` for the fields.

Re-running an import with the same arguments on the dataset it made returns that dataset
unchanged; any other existing dataset of that name is an error unless ``overwrite`` (which
deletes it first). A failed import deletes the partial dataset it created.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.benchmark_classes import VOC_CLASSES, voc_ontology
from fiftyone_usam.fiftyone_io.benchmark_files import (
    check_files,
    coco_sample,
    read_coco,
    resolve_voc_root,
    voc_sample,
    voc_split_ids,
)
from fiftyone_usam.fiftyone_io.benchmarks import (
    INSTANCES_FIELD,
    SEMANTIC_FIELD,
    DatasetExistsError,
    masks_dir_of,
    write_benchmark,
)
from fiftyone_usam.progress import ProgressCallback

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "INSTANCES_FIELD",
    "SEMANTIC_FIELD",
    "DatasetExistsError",
    "import_coco",
    "import_voc",
]


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
    out = masks_dir_of(dataset, masks_dir)
    settings = {
        "root": str(folder.resolve()),
        "split": split,
        "max_samples": max_samples,
        "masks_dir": str(out),
    }
    samples = (voc_sample(folder, i, out, split, VOC_CLASSES, with_instances) for i in ids)
    summary = f"{len(ids)} images of VOC {split} from {folder}"
    ontology = voc_ontology(superclasses=True)
    return write_benchmark(
        dataset,
        ontology,
        "import-voc",
        settings,
        samples,
        len(ids),
        summary,
        overwrite=overwrite,
        progress=progress,
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
    out = masks_dir_of(dataset, masks_dir)
    settings = {
        "images_dir": str(images_dir.resolve()),
        "annotations": str(annotations.resolve()),
        "max_samples": max_samples,
        "masks_dir": str(out),
    }
    samples = (coco_sample(coco, image, images_dir, out) for image in chosen)
    summary = f"{len(chosen)} images of {annotations.name} from {images_dir}"
    return write_benchmark(
        dataset,
        coco.ontology,
        "import-coco",
        settings,
        samples,
        len(chosen),
        summary,
        overwrite=overwrite,
        progress=progress,
    )


def _limit(max_samples: int | None) -> int | None:
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples must be at least 1 (got {max_samples}), or None for all")
    return max_samples
