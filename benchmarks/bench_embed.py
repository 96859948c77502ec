"""Seconds per image: our MaskEmbeddingExtractor vs SamAutomaticMaskGenerator(points_per_side=10).

Both run the same randomly initialised SAM on the same images (speed does not depend on the
weights' values). The generator is timed twice: with its default filters (pred_iou_thresh=0.88,
stability_score_thresh=0.95, which with random weights drop nearly every mask early and so
flatter it) and keeping every mask (thresholds 0), which is the work U-SAM needs.

    python benchmarks/bench_embed.py                      # tiny SAM, CPU, a few seconds
    python benchmarks/bench_embed.py --variant vit_b --images 3
    python benchmarks/bench_embed.py --gpu-throughput     # images/s, vit_b and vit_h, bf16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
from fiftyone_usam.embeddings.sam_backend import build_sam, load_sam
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS, SamVariant

TINY = SamVariant("tiny", 64, 2, 2, (1,), image_size=256, window_size=8)


def scenes(count: int, height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        image = rng.integers(80, 160, (height, width, 3), dtype=np.uint8)
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[y : y + height // 3, x : x + width // 3] = rng.integers(0, 255, 3)
        out.append(image)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_per_image(fn, images, device, repeats) -> float:
    fn(images[:1])  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(images)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best / len(images)


def compare(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    variant = TINY if args.variant == "tiny" else OFFICIAL_VARIANTS[args.variant]
    torch.manual_seed(0)
    sam = build_sam(variant).to(device)
    height, width = (int(v) for v in args.size.split("x"))
    images = scenes(args.images, height, width)
    from segment_anything import SamAutomaticMaskGenerator

    extractor = MaskEmbeddingExtractor(
        load_sam(sam, device=device),
        points_per_side=args.points_per_side,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    default_amg = SamAutomaticMaskGenerator(sam, points_per_side=args.points_per_side)
    keep_all_amg = SamAutomaticMaskGenerator(
        sam, points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )

    def amg(generator):
        return lambda batch: [generator.generate(image) for image in batch]

    rows = [
        (
            "MaskEmbeddingExtractor (ours)",
            time_per_image(extractor.extract, images, device, args.repeats),
        ),
        (
            "SamAutomaticMaskGenerator, defaults",
            time_per_image(amg(default_amg), images, device, args.repeats),
        ),
        (
            "SamAutomaticMaskGenerator, keep all masks",
            time_per_image(amg(keep_all_amg), images, device, args.repeats),
        ),
    ]
    ours = rows[0][1]
    print(
        f"SAM {variant.name} (random weights), input {variant.image_size}, {args.images} images "
        f"of {width}x{height}, {args.points_per_side**2} points, device {device}, "
        f"{torch.get_num_threads()} threads, precision {args.precision}"
    )
    print(f"{'method':44s} {'s/image':>9s} {'ratio to ours':>14s}")
    for name, seconds in rows:
        print(f"{name:44s} {seconds:9.3f} {seconds / ours:13.2f}x")


def gpu_throughput(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu-throughput needs a CUDA device")
    images = scenes(args.images, 768, 1024)
    print(f"{'variant':8s} {'precision':9s} {'batch':>5s} {'images/s':>9s}")
    for name in ("vit_b", "vit_h"):
        torch.manual_seed(0)
        sam = build_sam(OFFICIAL_VARIANTS[name]).cuda()
        extractor = MaskEmbeddingExtractor(
            load_sam(sam, device="cuda"), batch_size=args.batch_size, precision="bf16"
        )
        seconds = time_per_image(extractor.extract, images, torch.device("cuda"), args.repeats)
        print(f"{name:8s} {'bf16':9s} {args.batch_size:5d} {1 / seconds:9.2f}")
        del sam, extractor
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="tiny", choices=["tiny", *OFFICIAL_VARIANTS])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", default="120x160", help="HxW of the test images")
    parser.add_argument("--points-per-side", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--gpu-throughput",
        action="store_true",
        help="images/s of our extractor for vit_b and vit_h at 1024 input, bf16",
    )
    args = parser.parse_args()
    if args.gpu_throughput:
        gpu_throughput(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
