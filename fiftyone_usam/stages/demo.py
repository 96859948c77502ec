"""`demo`: the whole chain offline on the CPU in minutes, with tiny random models.

It builds a tiny SAM and a tiny Stable Diffusion pipeline with *random weights* (no download),
a small dataset of simple scenes (discs and squares on noise, with semantic and instance ground
truth), and runs `fiftyone_usam.stages.pipeline.run` on it: generate -> embed -> train -> predict ->
evaluate. Every stage is real; the masks and metrics are NOT meaningful, because the models
have learned nothing. It exists so a newcomer can see every stage work before downloading
gigabytes of weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fiftyone_usam.embeddings.sam_backend import build_sam
from fiftyone_usam.embeddings.sam_variants import load_variant_config
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.stages.pipeline import run
from fiftyone_usam.testing.pipelines import build_random_pipeline

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.stages.pipeline import PipelineReport, StageProgress

CLASSES = ("disc", "square")
DEMO_KEY = "usam_demo"
WARNING = (
    "The demo's SAM and Stable Diffusion have random weights: its masks and metrics are NOT "
    "meaningful. It shows every stage working; for real labels, run `usam run` with the real "
    "weights (see the README)."
)
_TINY_SAM = {
    "name": "demo-tiny",
    "encoder_embed_dim": 64,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "image_size": 256,
    "window_size": 8,
}


def demo(
    *,
    dataset: str = "usam-demo",
    workdir: str | Path | None = None,
    images: int = 12,
    per_class: int = 6,
    epochs: int = 10,
    seed: int = 0,
    progress: bool | StageProgress | None = None,
) -> PipelineReport:
    """Builds the tiny models and a scenes dataset, then runs the whole chain on the CPU.

    Re-running resumes (finished stages are skipped), like `run`.

    Args:
        dataset: name of the scenes dataset to create and label (persistent).
        workdir: where the tiny models, heads and the report go; default
            ``<FiftyOne dataset dir>/usam/<dataset>/demo``.
        images: scenes in the dataset.
        per_class: generated training images per class.
        epochs: head training epochs per stage.
        seed: seed of the models, the scenes and the run.
        progress: True for bars, False for none, or ``callback(stage, done, total)``.

    Raises:
        ConfigError: ``dataset`` exists and was not made by the demo.
    """

    if images < 1 or per_class < 2:
        raise ConfigError("the demo needs images >= 1 and per_class >= 2")
    out = Path(workdir).expanduser() if workdir else _default_workdir(dataset)
    checkpoint = tiny_sam_checkpoint(out / "sam", seed)
    pipeline = tiny_diffusion_pipeline(out / "diffusion", seed)
    scenes = scenes_dataset(dataset, out / "scenes", images, seed)
    return run(
        ",".join(CLASSES),
        dataset=scenes.name,
        source="synthetic",
        per_class=per_class,
        checkpoint=checkpoint,
        workdir=out,
        gt_field="ground_truth",
        model=pipeline,
        steps=10,
        points_per_side=6,
        epochs=epochs,
        seed=seed,
        threshold=0.0,  # a random model is never confident: keep its masks, to have some to see
        device="cpu",
        progress=progress,
    )


def tiny_sam_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny SAM saved as ``demo_sam.pth`` with its variant config."""
    import torch

    path = folder / "demo_sam.pth"
    config = folder / "demo_sam.json"
    if path.is_file() and config.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(_TINY_SAM, indent=2))
    torch.manual_seed(seed)
    tmp = path.with_suffix(".pth.tmp")
    torch.save(build_sam(load_variant_config(config)).state_dict(), tmp)
    tmp.replace(path)
    return path


def tiny_diffusion_pipeline(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny Stable Diffusion pipeline saved in ``folder``."""

    if (folder / "model_index.json").is_file():
        return folder
    build_random_pipeline("tiny", seed=seed).save_pretrained(folder)
    return folder


def scenes_dataset(name: str, folder: Path, count: int, seed: int = 0) -> fo.Dataset:
    """A dataset of discs and squares on noise with ``ground_truth`` (semantic) and
    ``ground_truth_instances``; reused when the demo made it before."""
    import fiftyone as fo
    from PIL import Image

    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if not dataset.info.get(DEMO_KEY):
            raise ConfigError(
                f"dataset {name!r} exists and was not made by the demo: pass another --dataset"
            )
        if len(dataset) == count:
            return dataset
        dataset.delete()  # the demo's own, cut short or of another size: made again
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        image, semantic, instances = _scene(rng, 96, 128)
        path = folder / f"scene_{i:03d}.png"
        Image.fromarray(image).save(path)
        detections = [
            fo.Detection.from_mask(mask, label=CLASSES[label - 1])
            for label, mask in instances
            if mask.any()  # the first shape may cover the second entirely
        ]
        samples.append(
            fo.Sample(
                filepath=str(path),
                ground_truth=fo.Segmentation(mask=semantic),
                ground_truth_instances=fo.Detections(detections=detections),
            )
        )
    dataset = fo.Dataset(name)
    dataset.info[DEMO_KEY] = True  # first: a demo killed while adding samples can resume
    dataset.mask_targets["ground_truth"] = {0: "background", 1: CLASSES[0], 2: CLASSES[1]}
    dataset.persistent = True
    dataset.save()
    dataset.add_samples(samples)
    return dataset


def _scene(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """`(H, W, 3)` image, `(H, W)` semantic map, and ``(class id, (H, W) mask)`` instances."""
    image = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
    semantic = np.zeros((height, width), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    instances = []
    for label in rng.permutation([1, 2]):
        size = int(rng.integers(height // 5, height // 3))
        cy, cx = int(rng.integers(size, height - size)), int(rng.integers(size, width - size))
        if label == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < size**2
        else:
            mask = (abs(yy - cy) < size) & (abs(xx - cx) < size)
        mask &= semantic == 0  # the first object stays whole
        image[mask] = rng.integers(150, 255, 3)
        semantic[mask] = label
        instances.append((int(label), mask))
    return image, semantic, instances


def _default_workdir(dataset_name: str) -> Path:
    import fiftyone as fo

    return Path(fo.config.default_dataset_dir).expanduser() / "usam" / dataset_name / "demo"
