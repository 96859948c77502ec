"""Prediction: the defaults for threshold, NMS IoU and granularity, and re-labelling speed.

``--part defaults`` (no database): planted scenes whose answer is known. A head is trained on
planted bags (`fiftyone_usam.testing.planted`); held-out bags become objects in 64x64 scenes. Every
point gets three masks by its kind -- object points: a part of the object (fine), the object
(medium, SAM's "best" here), the object plus a margin of background (coarse); part points:
small parts; background points: background regions. Each scene holds two objects (two held-out
bags, placed at random and possibly overlapping), and the predictor's semantic map is scored
against it (mIoU over background + classes, accumulated over all scenes), with instance
precision (kept masks matching an object at IoU >= 0.5 with the right label; part masks count
against it) and recall (objects so matched). The table sweeps NMS IoU, the threshold margin and
the granularity, which is how the library's defaults were chosen.

``--part relabel`` (needs FiftyOne's database; set FIFTYONE_DATABASE_URI to use a private one):
images per second of `predict` from a filled EmbeddingStore (SAM never loaded) on 640x480
images, against the full path with a tiny SAM on a few of them.

    python benchmarks/bench_predict.py --part defaults
    python benchmarks/bench_predict.py --part relabel --images 200
    python benchmarks/bench_predict.py --part relabel --images 200 --busy 2   # loaded machine
    python benchmarks/bench_predict.py --part relabel --repeats 5   # median of five runs each

The relabel part times the reference path (one image at a time, FiftyOne's label objects saved
sample by sample) and each change on top of it in one run (`predict`'s ``label_batch_size`` and
``bulk_writes`` switches), on the same store.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.head.classifier import default_threshold
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.model import HeadConfig
from fiftyone_usam.head.train import fit_head
from fiftyone_usam.inference.predictor import PredictorConfig, USAMPredictor
from fiftyone_usam.masks import decode_rles, encode_masks
from fiftyone_usam.testing.planted import BACKGROUND, OBJECT, make_planted_bags

SIZE = 64


def rect(y0: int, y1: int, x0: int, x1: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[max(y0, 0) : min(y1, size), max(x0, 0) : min(x1, size)] = True
    return mask


def point_masks(
    kind: int, obj: np.ndarray, box: tuple[int, int, int, int], rng
) -> list[np.ndarray]:
    """SAM's three masks (fine, medium, coarse) for a point of this kind."""
    y, x, h, w = box
    if kind == OBJECT:
        py, px = rng.integers(y, y + h // 2), rng.integers(x, x + w // 2)
        return [
            rect(py, py + h // 2, px, px + w // 2),
            obj,
            rect(y - 4, y + h + 4, x - 4, x + w + 4),
        ]
    if kind == BACKGROUND:
        by, bx = rng.integers(0, SIZE - 8, 2)
        return [rect(by, by + 8, bx, bx + 8) & ~obj, rect(by - 16, by + 16, 0, SIZE) & ~obj, ~obj]
    py, px = rng.integers(y, y + h - 4), rng.integers(x, x + w - 4)  # part
    return [rect(py, py + 4, px, px + 4), rect(py, py + h // 2, px, px + w // 2), obj]


def scene(bags: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator):
    """One scene with an object per planted bag (they may overlap); proposals + true map."""
    masks, embeddings, truth, objects = [], [], np.zeros((SIZE, SIZE), np.int64), []
    for (bag_embeddings, kinds), label in bags:
        h, w = rng.integers(16, 32, 2)
        y, x = rng.integers(0, SIZE - h), rng.integers(0, SIZE - w)
        obj = rect(y, y + h, x, x + w)
        truth[obj] = label + 1  # a later object occludes an earlier one
        objects.append((obj, label))
        for kind in kinds:
            masks += point_masks(kind, obj, (y, x, h, w), rng)
        embeddings.append(bag_embeddings)
    stack = np.stack(masks, axis=-1).astype(np.uint8)
    d = len(masks) // 3
    iou = np.tile([0.8, 0.95, 0.85], (d, 1)).astype(np.float32)  # SAM's pick: medium
    proposals = MaskProposals(
        embeddings=np.concatenate(embeddings).astype(np.float16),
        iou_predictions=iou,
        stability_scores=np.ones_like(iou),
        points=np.zeros((d, 2), np.float32),
        image_size=(SIZE, SIZE),
        mask_rles=tuple(encode_masks(np.asfortranarray(stack))),
    )
    return proposals, truth, objects


def score(predictor: USAMPredictor, scenes, num_classes: int) -> tuple[float, float, float]:
    """mIoU of the semantic maps; precision and recall of instances (IoU >= 0.5, right label)."""
    confusion = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    matched = kept = found = total = 0
    for proposals, truth, objects in scenes:
        result = predictor.predict_proposals(proposals)
        np.add.at(confusion, (truth.ravel(), result.semantic.ravel().astype(np.int64)), 1)
        masks = decode_rles(result.instances.rles, (SIZE, SIZE))
        hits = [
            [(m & o).sum() / max((m | o).sum(), 1) >= 0.5 and p == c + 1 for o, c in objects]
            for m, p in zip(masks, result.instances.labels, strict=True)
        ]
        kept += len(masks)
        matched += sum(any(h) for h in hits)
        total += len(objects)
        found += sum(any(h[k] for h in hits) for k in range(len(objects)))
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = (confusion.sum(0) + confusion.sum(1)) > 0
    ious = np.diag(confusion) / np.maximum(union, 1)
    return float(ious[present].mean()), matched / max(kept, 1), found / max(total, 1)


def defaults(args: argparse.Namespace) -> None:
    rows: dict[tuple, list[tuple[float, float, float]]] = {}
    for seed in range(args.seeds):
        train, held = make_planted_bags(4, 24, seed=seed).split(6)
        head = fit_head(
            train.embeddings,
            train.labels,
            train.classes,
            TrainConfig(epochs=60, patience=20, batch_size=16, seed=seed, device="cpu"),
            HeadConfig(hidden_dim=64),
        )
        rng = np.random.default_rng(seed)
        bags = [
            ((e, k), int(c))
            for e, k, c in zip(held.embeddings, held.kinds, held.labels, strict=True)
        ]
        # two objects per scene: consecutive held-out bags (same or different classes)
        scenes = [scene([bags[i], bags[(i + 1) % len(bags)]], rng) for i in range(len(bags))]
        for nms, margin, granularity in itertools.product(
            (0.3, 0.5, 0.7, 0.9), (0.25, 0.5, 0.75), ("best", "coarse", "fine", "all")
        ):
            config = PredictorConfig(default_threshold(4, margin), nms, granularity)
            rows.setdefault((nms, margin, granularity), []).append(
                score(USAMPredictor(head, config), scenes, 4)
            )
    print(
        f"planted scenes: 24 per seed, two objects each (4 classes, may overlap), d=200 points, "
        f"{args.seeds} seeds; mean over seeds"
    )
    print(
        f"{'nms_iou':>7s} {'margin':>6s} {'threshold':>9s} {'granularity':>11s} "
        f"{'mIoU':>6s} {'inst. prec.':>11s} {'inst. recall':>12s}"
    )
    ranked = sorted(rows.items(), key=lambda kv: -np.mean([r[0] for r in kv[1]]))
    for (nms, margin, granularity), values in sorted(rows.items()):
        m = np.mean(values, axis=0)
        mark = "  <- best mIoU" if (nms, margin, granularity) == ranked[0][0] else ""
        print(
            f"{nms:7.1f} {margin:6.2f} {default_threshold(4, margin):9.3f} {granularity:>11s} "
            f"{m[0]:6.3f} {m[1]:11.3f} {m[2]:12.3f}{mark}"
        )


# (name, predict's switches): the reference path first, then one change at a time
TORCH_THREADS = {"head_threads": None}
RELABEL_PATHS = [
    (
        "one at a time, objects saved per sample",
        {"label_batch_size": 1, "bulk_writes": False, **TORCH_THREADS},
    ),
    ("+ batched head (64)", {"label_batch_size": 64, "bulk_writes": False, **TORCH_THREADS}),
    ("+ bulk writes beside the labelling", {"label_batch_size": 64, **TORCH_THREADS}),
    ("+ the head on one thread (the defaults)", {}),
]


def relabel(args: argparse.Namespace) -> None:
    import fiftyone as fo
    from PIL import Image

    import fiftyone_usam as usam
    from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
    from fiftyone_usam.fiftyone_io.datasets import record_store

    train, held = make_planted_bags(4, 24, seed=0).split(6)
    head = fit_head(
        train.embeddings,
        train.labels,
        train.classes,
        TrainConfig(epochs=40, batch_size=16, device="cpu"),
        HeadConfig(hidden_dim=args.hidden_dim),
    )
    spec = StoreSpec("planted", "0" * 64, 10, 1024)
    head.store_spec = spec
    folder = Path(tempfile.mkdtemp(prefix="usam-bench-"))
    dataset = fo.Dataset()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths])
    store = EmbeddingStore.create(folder / "store", spec)
    ids = dataset.values("id")
    for start in range(0, len(ids), 16):
        items = {}
        for k, sample_id in enumerate(ids[start : start + 16]):
            bag = (start + k) % len(held.labels)
            items[sample_id] = big_proposals(held.embeddings[bag], held.kinds[bag], rng)
        store.write(items)
    record_store(dataset, store)
    print(
        f"re-labelling {args.images} images of 640x480 from cached embeddings (d=100, head "
        f"hidden {args.hidden_dim}, SAM not loaded), {args.busy} busy process(es) alongside; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    with busy_processes(args.busy):
        figures = []
        for name, switches in RELABEL_PATHS:
            rates = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                report = usam.predict(
                    dataset, head=head, field="usam", overwrite=True, progress=False, **switches
                )
                seconds = time.perf_counter() - started
                assert not report.used_sam and report.labelled == args.images
                rates.append(args.images / seconds)
            figures.append(float(np.median(rates)))
            print(
                f"  {name:48s} {figures[-1]:6.1f} images/s (median of {len(rates)}: "
                f"{min(rates):.1f}-{max(rates):.1f})  {figures[-1] / figures[0]:5.2f}x the first"
            )
    cached = figures[-1]
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.full_images:
        full = full_path(head, paths[: args.full_images])
        print(
            f"full path (tiny SAM, input 256: embeds, then labels) on {args.full_images} of them: "
            f"{full:.2f} images/s; cached / full = {cached / full:.0f}x"
        )
    dataset.delete()


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU while the block runs (a loaded machine)."""
    import multiprocessing

    workers = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def _spin() -> None:
    while True:
        pass


def full_path(head, paths: list[Path]) -> float:
    """Images/s of `predict` running SAM: a tiny random SAM (a real vit_b is far slower)."""
    import fiftyone as fo
    import torch

    import fiftyone_usam as usam
    from fiftyone_usam.embeddings.sam_backend import build_sam, load_sam
    from fiftyone_usam.embeddings.sam_variants import SamVariant
    from fiftyone_usam.stages.embed import spec_for

    torch.manual_seed(0)
    sam = load_sam(build_sam(SamVariant("tiny", 64, 2, 2, (1,), image_size=256, window_size=8)))
    head.store_spec = spec_for(sam, 10)
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths])
    started = time.perf_counter()
    report = usam.predict(dataset, head=head, sam=sam, field="usam", progress=False)
    seconds = time.perf_counter() - started
    assert report.used_sam and report.labelled == len(paths)
    dataset.delete()
    return len(paths) / seconds


def big_proposals(
    embeddings: np.ndarray, kinds: np.ndarray, rng: np.random.Generator
) -> MaskProposals:
    """640x480 proposals with blocky masks (a stand-in for SAM's smooth masks): squares of 40
    to 240 pixels, encoded by pycocotools straight from their boxes."""
    from pycocotools import mask as mask_utils

    h, w = 480, 640
    boxes = []
    for _ in range(3 * len(kinds)):
        y, x = rng.integers(0, h - 60), rng.integers(0, w - 60)
        size = int(rng.integers(40, 240))
        boxes.append([x, y, min(size, w - x), min(size, h - y)])
    rles = mask_utils.frPyObjects(np.asarray(boxes, np.float64), h, w)
    iou = np.tile([0.8, 0.95, 0.85], (len(kinds), 1)).astype(np.float32)
    return MaskProposals(
        embeddings.astype(np.float16),
        iou,
        np.ones_like(iou),
        np.zeros((len(kinds), 2), np.float32),
        (h, w),
        tuple(r["counts"] for r in rles),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["defaults", "relabel"], default="defaults")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--hidden-dim", type=int, default=64, help="the head's hidden width")
    parser.add_argument(
        "--busy", type=int, default=0, help="processes spinning alongside (a loaded machine)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each relabel path (the median is shown)"
    )
    parser.add_argument(
        "--full-images",
        type=int,
        default=5,
        help="also time the full path (SAM runs) on this many; 0: skip",
    )
    args = parser.parse_args()
    defaults(args) if args.part == "defaults" else relabel(args)


if __name__ == "__main__":
    main()
