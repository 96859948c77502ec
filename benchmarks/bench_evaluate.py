"""Evaluation speed: `usam evaluate` on VOC-sized planted data, and where its time goes.

Builds a dataset of N images of 500x375 (PASCAL VOC's typical size) with 21-class semantic
ground truth (255 boundary bands) and instances, and predictions that are the ground truth with
shifted objects; then times

- our metrics alone (confusion matrix + boundary counts per image, pure numpy),
- `evaluate()` end to end (our pass, FiftyOne's evaluate_segmentations, evaluate_detections with
  masks, the stored run), with the prediction's class ids equal to the ground truth's (evaluated
  in place) and in another order (aligned maps written for FiftyOne),

and prints images/second and the ratios. Needs FiftyOne's database (set FIFTYONE_DATABASE_URI to
use a private one).

    python benchmarks/bench_evaluate.py --images 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from fiftyone_usam.evaluation.metrics import boundary_counts, confusion_matrix

HEIGHT, WIDTH, CLASSES = 375, 500, 20


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[int, tuple]]]:
    """Ground truth, prediction (objects shifted a few px) and the objects' (class, box)."""
    gt = np.zeros((HEIGHT, WIDTH), np.uint8)
    pred = np.zeros_like(gt)
    objects = []
    for _ in range(rng.integers(1, 4)):
        label = int(rng.integers(1, CLASSES + 1))
        h, w = int(rng.integers(40, 200)), int(rng.integers(40, 250))
        y, x = int(rng.integers(0, HEIGHT - h)), int(rng.integers(0, WIDTH - w))
        gt[y : y + h, x : x + w] = label
        dy, dx = rng.integers(-8, 9, size=2)
        py, px = max(0, y + int(dy)), max(0, x + int(dx))
        pred[py : py + h, px : px + w] = label
        objects.append((label, (y, x, h, w), (py, px)))
    edge = np.zeros_like(gt, bool)
    edge[:-2] |= gt[:-2] != gt[2:]
    edge[:, :-2] |= gt[:, :-2] != gt[:, 2:]
    gt[edge] = 255
    return gt, pred, objects


def build(n: int, folder: Path, seed: int = 0):
    import fiftyone as fo
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(1, CLASSES + 1)]
    image = folder / "image.jpg"
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 128, np.uint8)).save(image)
    samples, maps = [], []
    for _ in range(n):
        gt, pred, objects = scene(rng)
        maps.append((gt, pred))
        truth, guesses = [], []
        for label, (y, x, h, w), (py, px) in objects:
            box = [x / WIDTH, y / HEIGHT, w / WIDTH, h / HEIGHT]
            pbox = [
                px / WIDTH,
                py / HEIGHT,
                min(w, WIDTH - px) / WIDTH,
                min(h, HEIGHT - py) / HEIGHT,
            ]
            mask = np.ones((h, w), bool)
            truth.append(fo.Detection(label=names[label - 1], bounding_box=box, mask=mask))
            pmask = np.ones((min(h, HEIGHT - py), min(w, WIDTH - px)), bool)
            guesses.append(
                fo.Detection(
                    label=names[label - 1],
                    bounding_box=pbox,
                    mask=pmask,
                    confidence=float(rng.random()),
                )
            )
        samples.append(
            fo.Sample(
                filepath=str(image),
                ground_truth=fo.Segmentation(mask=gt),
                ground_truth_instances=fo.Detections(detections=truth),
                usam_semantic=fo.Segmentation(mask=pred),
                usam_instances=fo.Detections(detections=guesses),
            )
        )
    dataset = fo.Dataset()
    dataset.add_samples(samples)
    targets = {0: "background", **{i + 1: n for i, n in enumerate(names)}}
    dataset.mask_targets = {"ground_truth": targets, "usam_semantic": targets}
    dataset.save()
    return dataset, maps, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()

    from fiftyone_usam.stages.evaluate import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        dataset, maps, targets = build(args.images, Path(tmp))
        started = time.perf_counter()
        cm = np.zeros((CLASSES + 1, CLASSES + 1), np.int64)
        for gt, pred in maps:
            cm += confusion_matrix(gt, pred, CLASSES + 1)
        t_cm = time.perf_counter() - started
        started = time.perf_counter()
        for gt, pred in maps:
            boundary_counts(gt, pred, CLASSES + 1)
        t_boundary = time.perf_counter() - started

        started = time.perf_counter()
        same = evaluate(dataset, pred_field="usam", gt_field="ground_truth", progress=False)
        t_same = time.perf_counter() - started

        shuffled = dict(targets)
        shuffled[1], shuffled[2] = targets[2], targets[1]
        dataset.mask_targets["usam_semantic"] = shuffled
        dataset.save()
        started = time.perf_counter()
        evaluate(
            dataset, pred_field="usam", gt_field="ground_truth", eval_key="shuffled", progress=False
        )
        t_aligned = time.perf_counter() - started
        dataset.delete()

    n = args.images
    print(f"{n} images of {WIDTH}x{HEIGHT}, {CLASSES} classes + background (CPU)")
    print(f"  confusion matrices only      {n / t_cm:8.1f} images/s")
    print(f"  boundary counts only         {n / t_boundary:8.1f} images/s")
    print(
        f"  evaluate(), ids agree        {n / t_same:8.1f} images/s  "
        f"(mIoU {100 * (same.mean_iou or 0):.2f}, mAP50 {100 * (same.map50 or 0):.2f})"
    )
    print(
        f"  evaluate(), ids re-ordered   {n / t_aligned:8.1f} images/s  "
        f"({t_aligned / t_same:.2f}x the time: aligned maps written for FiftyOne)"
    )
    print(f"  boundary share of evaluate() {t_boundary / t_same:.0%}")
    print(f"  PASCAL VOC val (1449 images) at that rate: ~{1449 * t_same / n:.0f} s")


if __name__ == "__main__":
    main()
