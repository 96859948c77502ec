"""Simple scenes with a known answer: shapes on noise, and the demo's dataset of them.

`scene` draws a coloured rectangle and disc on a noisy background (for image-handling tests).
`scenes_dataset` holds discs and squares with semantic and instance ground truth (the demo's).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fiftyone_usam.errors import ConfigError

if TYPE_CHECKING:
    import fiftyone as fo

CLASSES = ("disc", "square")
DEMO_KEY = "usam_demo"


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A simple scene: a coloured rectangle and disc on a noisy background, `(H, W, 3)` uint8."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 255, 3)
    yy, xx = np.mgrid[:height, :width]
    cy, cx, r = (
        rng.integers(height // 4, 3 * height // 4),
        rng.integers(width // 4, 3 * width // 4),
        min(height, width) // 5,
    )
    image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 255, 3)
    return image


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
