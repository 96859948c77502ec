"""Seconds per image: our MaskEmbeddingExtractor vs SamAutomaticMaskGenerator(points_per_side=10).

Both run the same randomly initialised SAM on the same images (speed does not depend on the
weights' values). The generator is timed twice: with its default filters (pred_iou_thresh=0.88,
stability_score_thresh=0.95, which with random weights drop nearly every mask early and so
flatter it) and keeping every mask (thresholds 0), which is the work U-SAM needs.

    python benchmarks/bench_embed.py                      # tiny SAM, CPU, a few seconds
    python benchmarks/bench_embed.py --variant vit_b --images 3
    python benchmarks/bench_embed.py --gpu-throughput     # images/s, vit_b and vit_h, bf16
    python benchmarks/bench_embed.py --after-decoder      # mask_encoding host vs device
    python benchmarks/bench_embed.py --attention          # encoder_attention reference vs sdpa

``--after-decoder`` times everything after the mask decoder for one 1024x768 image and a 10x10
grid (300 masks), for ``mask_encoding="host"`` (the reference: masks thresholded, copied to the
host whole, encoded there by pycocotools) and ``"device"`` (run boundaries found on the device,
only the runs copied). Each is split into device work (upsampling, stability, threshold and
transposition or run boundaries; with ``--device cpu`` the "device" is the CPU) and host work
(the device-to-host copy, RLE encoding or runs -> counts, building the proposals). Without a
GPU the copy is timed as a host memcpy of the same bytes, a lower bound of a real transfer.
The masks of both paths are checked equal to the extractor's own output.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from fiftyone_usam.embeddings import sam_backend
from fiftyone_usam.embeddings.decoder import prompt_batches, run_decoder
from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
from fiftyone_usam.embeddings.mask_runs import MaskRuns, mask_runs
from fiftyone_usam.embeddings.proposals import MASKS_PER_POINT, MaskProposals
from fiftyone_usam.embeddings.sam_backend import build_sam, load_sam
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS, SamVariant
from fiftyone_usam.masks import encode_masks
from fiftyone_usam.testing.scenes import scene

TINY = SamVariant("tiny", 64, 2, 2, (1,), image_size=256, window_size=8)


def scenes(count: int, height: int, width: int) -> list[np.ndarray]:
    """Simple scenes (the work does not depend on the content)."""
    return [scene(height, width, seed) for seed in range(count)]


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


# -- after the mask decoder: mask_encoding host vs device -------------------------------------


def low_res_logits(extractor: MaskEmbeddingExtractor, image: np.ndarray):
    """`(d, 3, 256, 256)` decoder logits and `(d, 3)` IoUs of one image's grid, and the points."""
    h, w = image.shape[:2]
    points, (batch,) = prompt_batches(
        None, extractor.points_per_side, (h, w), extractor.sam.image_size, per_batch=1 << 20
    )
    with torch.inference_mode():
        features = extractor.encode([image])
        low_res, iou, _ = run_decoder(extractor.model, features, batch, multimask=True)
    return low_res.float(), iou.float(), points


def blob_logits(extractor: MaskEmbeddingExtractor, image: np.ndarray, seed: int):
    """`low_res_logits` with object-like masks: each logit map a smooth ellipse (one connected
    region, as most of a trained SAM's masks are) instead of a random SAM's speckle."""
    low_res, iou, points = low_res_logits(extractor, image)
    rng = np.random.default_rng(seed)
    d, k, size = low_res.shape[0], low_res.shape[1], low_res.shape[-1]
    centre = rng.uniform(0.2, 0.8, (d, k, 2, 1, 1)) * size
    axes = rng.uniform(0.05, 0.5, (d, k, 2, 1, 1)) * size
    grid = np.mgrid[:size, :size].astype(np.float64)[None, None]
    logits = 8 * (1 - (((grid - centre) / axes) ** 2).sum(axis=2))
    return torch.as_tensor(logits, dtype=torch.float32, device=low_res.device), iou, points


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """The device-to-host copy; on the CPU a memcpy of the same bytes stands in for it."""
    return tensor.cpu() if tensor.is_cuda else tensor.clone()


def after_decoder(extractor, low_res, iou, points, size, encoding):
    """One image's work after the decoder, as the extractor does it, in timed halves.

    Returns:
        (device seconds, host seconds, device-to-host bytes, runs, proposals)
    """
    model, threshold, (h, w) = extractor.model, extractor.model.mask_threshold, size
    input_size = sam_backend.resized_shape(h, w, extractor.sam.image_size)
    step = max(1, extractor.max_mask_bytes // (MASKS_PER_POINT * h * w * 4))
    device_s = host_s = 0.0
    nbytes, runs, rles, stability = 0, 0, [], []
    for start in range(0, low_res.shape[0], step):
        started = time.perf_counter()
        with torch.inference_mode():
            logits = model.postprocess_masks(low_res[start : start + step], input_size, (h, w))
            score = sam_backend.stability_score(logits, threshold, extractor.stability_offset)
            if encoding == "device":
                out = mask_runs(logits.flatten(0, 1), threshold)
            else:  # today's path: thresholded, transposed for pycocotools, copied whole
                out = (logits > threshold).flatten(0, 1).transpose(1, 2).contiguous()
            del logits
        sync(extractor.device)
        mid = time.perf_counter()
        stability.append(to_host(score))
        if isinstance(out, MaskRuns):
            host = MaskRuns(to_host(out.runs), to_host(out.lengths), out.size)
            rles.extend(host.counts())
            nbytes, runs = nbytes + out.nbytes, runs + out.runs.numel()
        else:
            host = to_host(out)
            rles.extend(encode_masks(host.numpy().view(np.uint8).transpose(2, 1, 0)))
            nbytes += out.numel() * out.element_size()
        nbytes += score.numel() * score.element_size()
        host_s += time.perf_counter() - mid
        device_s += mid - started
    started = time.perf_counter()
    proposals = MaskProposals(
        embeddings=np.zeros((len(points), 1024), np.float16),
        iou_predictions=iou.cpu().numpy(),
        stability_scores=torch.cat(stability).numpy(),
        points=points.astype(np.float32),
        image_size=(h, w),
        mask_rles=tuple(rles),
    )
    host_s += time.perf_counter() - started
    return device_s, host_s, nbytes, runs, proposals


def time_paths(extractor, decoded, repeats):
    """Per image: the best over ``repeats`` of each figure, and the proposals, each way."""
    rows = {}
    for encoding in ("host", "device"):
        best = None
        for _ in range(repeats):
            found = [after_decoder(extractor, *d, size, encoding) for d, size in decoded]
            means = [sum(f[i] for f in found) / len(found) for i in range(4)]
            best = means if best is None else [min(a, b) for a, b in zip(best, means, strict=True)]
        rows[encoding] = (*best, [f[4] for f in found])
    for a, b in zip(rows["host"][4], rows["device"][4], strict=True):
        assert a.mask_rles == b.mask_rles
        assert np.array_equal(a.stability_scores, b.stability_scores)
    return rows


def print_paths(source: str, rows) -> None:
    masks = len(rows["host"][4][0].mask_rles)
    print(f"{source}: {rows['device'][3] / masks:.0f} runs per mask")
    print(f"  {'mask_encoding':14s} {'device ms':>10s} {'host ms':>9s} {'D2H MB':>8s}  per image")
    for encoding, (device_s, host_s, nbytes, *_) in rows.items():
        print(f"  {encoding:14s} {device_s * 1e3:10.1f} {host_s * 1e3:9.1f} {nbytes / 1e6:8.2f}")
    host, dev = rows["host"], rows["device"]
    print(
        f"  host work, device path / host path: {dev[1] / host[1]:.3f} "
        f"({host[1] / dev[1]:.1f}x less); D2H bytes {dev[2] / host[2]:.4f} "
        f"({host[2] / dev[2]:.0f}x less); masks and stability scores equal"
    )


def compare_after_decoder(args: argparse.Namespace) -> None:
    from fiftyone_usam.testing.sam import build_tiny_sam

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = (int(v) for v in args.size.split("x"))
    images = scenes(args.images, height, width)
    sam = sam_backend.load_sam(build_tiny_sam(0), device=device)
    extractor = MaskEmbeddingExtractor(sam, points_per_side=args.points_per_side)
    print(
        f"after the mask decoder, {args.images} images of {width}x{height}, "
        f"{args.points_per_side**2 * 3} masks each, device {device}, "
        f"{torch.get_num_threads()} threads, best of {args.repeats}; load average "
        f"{os.getloadavg()}"
    )
    sizes = [image.shape[:2] for image in images]
    tiny = [low_res_logits(extractor, image) for image in images]
    tiny_rows = time_paths(extractor, list(zip(tiny, sizes, strict=True)), args.repeats)
    print_paths("tiny random SAM's masks", tiny_rows)
    blobs = [blob_logits(extractor, image, seed) for seed, image in enumerate(images)]
    print_paths(
        "object-like masks (ellipse logits through the same path)",
        time_paths(extractor, list(zip(blobs, sizes, strict=True)), args.repeats),
    )
    extracted = end_to_end(extractor.sam, images, args)
    for found in [tiny_rows["host"][4], *extracted]:
        for a, b in zip(found, extracted[0], strict=True):
            assert a.mask_rles == b.mask_rles
            assert np.array_equal(a.stability_scores, b.stability_scores)
    print("masks and stability scores: the timed paths' equal extract()'s, each way")
    print(f"load average after: {os.getloadavg()}")


def end_to_end(sam, images, args) -> list[list[MaskProposals]]:
    """Seconds per image of the whole `extract` each way; returns each way's proposals."""
    print(f"  {'extract(), whole, tiny SAM':34s} {'s/image':>8s}")
    out = []
    for encoding, workers in (("host", 0), ("device", 0), ("device", 1)):
        extractor = MaskEmbeddingExtractor(
            sam, points_per_side=args.points_per_side, mask_encoding=encoding,
            encode_workers=workers,
        )  # fmt: skip
        extractor.extract([images[0][:64, :64]])  # warm-up
        started = time.perf_counter()
        out.append(extractor.extract(images))
        seconds = (time.perf_counter() - started) / len(images)
        print(f"  mask_encoding={encoding}, encode_workers={workers}".ljust(36), f"{seconds:8.3f}")
    return out


# -- the image encoder: encoder_attention reference vs sdpa -----------------------------------


def compare_attention(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    variant = TINY if args.variant == "tiny" else OFFICIAL_VARIANTS[args.variant]
    torch.manual_seed(0)
    sam = build_sam(variant)
    with torch.no_grad():  # random weights have zero relative positions: make them count
        for name, param in sam.named_parameters():
            if "rel_pos" in name:
                param.normal_(0.0, 0.5)
    loaded = load_sam(sam.to(device), device=device)
    images = scenes(args.batch_size, 768, 1024)
    print(
        f"image encoder, SAM {variant.name} (random weights, random relative positions), batch "
        f"{args.batch_size}, device {device}, precision {args.precision}; load average "
        f"{os.getloadavg()}"
    )
    outputs = {}
    print(f"{'encoder_attention':18s} {'s/image':>8s}")
    for attention in ("reference", "sdpa"):
        extractor = MaskEmbeddingExtractor(
            loaded, precision=args.precision, encoder_attention=attention
        )
        seconds = time_per_image(extractor.encode, images, device, args.repeats)
        outputs[attention] = extractor.encode(images)
        print(f"{attention:18s} {seconds:8.3f}")
    difference = (outputs["sdpa"] - outputs["reference"]).abs().max().item()
    scale = outputs["reference"].abs().max().item()
    print(f"max |sdpa - reference| = {difference:.2e} (outputs up to {scale:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="tiny", choices=["tiny", *OFFICIAL_VARIANTS])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument(
        "--size", help="HxW of the test images (120x160; 768x1024 with --after-decoder)"
    )
    parser.add_argument("--points-per-side", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument(
        "--gpu-throughput",
        action="store_true",
        help="images/s of our extractor for vit_b and vit_h at 1024 input, bf16",
    )
    parser.add_argument(
        "--after-decoder",
        action="store_true",
        help="host vs device mask encoding after the decoder (1024x768 unless --size is given)",
    )
    parser.add_argument(
        "--attention", action="store_true", help="image encoder time, reference vs sdpa"
    )
    args = parser.parse_args()
    if args.gpu_throughput:
        gpu_throughput(args)
    elif args.after_decoder:
        args.size = args.size or "768x1024"
        compare_after_decoder(args)
    elif args.attention:
        compare_attention(args)
    else:
        args.size = args.size or "120x160"
        compare(args)


if __name__ == "__main__":
    main()
