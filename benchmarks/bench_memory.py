"""Peak memory of embedding one image: the grid's size, and a very large photo.

Each case runs in a child process of its own (so one case's peak does not hide another's) and
reports that process's peak resident memory. Figures are for the tiny random SAM on the CPU:
they show how memory grows with the grid and the image, not a real SAM's totals.

    python benchmarks/bench_memory.py            # grids 10/32/64 at 320x240, and 10000x10000
    python benchmarks/bench_memory.py --quick    # grids only

``chunked`` is the default path (``points_per_batch=128`` prompts per decoder call, masks of
images above ``max_mask_pixels`` from scaled logits); ``one call`` turns both off, as before.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(points: int, height: int, width: int, chunked: bool, from_file: bool) -> dict:
    import numpy as np
    import torch

    from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
    from fiftyone_usam.embeddings.sam_backend import load_sam
    from fiftyone_usam.images import load_rgb
    from fiftyone_usam.testing.sam import build_tiny_sam

    torch.set_num_threads(1)
    sam = load_sam(build_tiny_sam(0), device="cpu")
    options = {} if chunked else {"points_per_batch": 1 << 30, "max_mask_pixels": 1 << 40}
    extractor = MaskEmbeddingExtractor(sam, points_per_side=points, **options)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    if from_file:
        from PIL import Image

        path = Path(tempfile.mkdtemp()) / "large.png"
        Image.fromarray(image).save(path)
        del image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        image = load_rgb(path, max_pixels=None)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    extractor.extract([image])
    return {
        "seconds": time.perf_counter() - started,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "before_mb": before / 1024,
    }


def run_case(points: int, height: int, width: int, chunked: bool, from_file: bool) -> dict:
    spec = json.dumps([points, height, width, chunked, from_file])
    out = subprocess.run(
        [sys.executable, __file__, "--one", spec], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="grids only, no large image")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*json.loads(args.one))))
        return
    cases = [(p, 240, 320, False) for p in (10, 32, 64)]
    if not args.quick:
        cases.append((2, 10000, 10000, True))
    print("tiny random SAM, CPU, 1 thread; peak resident memory of the whole process")
    print(f"{'case':34s} {'path':9s} {'peak MB':>8s} {'s':>7s}")
    for points, height, width, from_file in cases:
        for chunked in (False, True):
            r = run_case(points, height, width, chunked, from_file)
            name = f"{points}x{points} points, {width}x{height}" + (" PNG" if from_file else "")
            path = "chunked" if chunked else "one call"
            if "error" in r:
                print(f"{name:34s} {path:9s} failed: {r['error']}")
            else:
                print(f"{name:34s} {path:9s} {r['peak_mb']:8.0f} {r['seconds']:7.1f}")


if __name__ == "__main__":
    main()
