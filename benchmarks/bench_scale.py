"""Scaling out: `usam.embed` locally, on Ray with 1 worker and on Ray with 2, on the same images.

A vit_b-sized SAM with random weights (speed does not depend on their values) is saved as a
checkpoint with its ``<stem>.json`` variant beside it, so each Ray worker loads it by path as a
real run would. The same 500x375 images are embedded three times, each into a fresh store:

- ``local``: this process (the baseline);
- ``ray x1``: one Ray actor; its ratio to local is the engine's overhead (actor start, SAM
  loaded by the driver for its identity and again by the worker, blocks sent and collected);
- ``ray x2``: two actors; its ratio to ``ray x1`` is the scaling.

Each row's time is the whole `embed` call, SAM loading included, as a user's run pays it; so
few images weigh the loading more than many do. The Ray stores are compared with the local one
(sample ids, embeddings, masks): on the CPU they are equal bit for bit.

    python benchmarks/bench_scale.py                          # vit_b, 4 images (slow on a CPU)
    python benchmarks/bench_scale.py --sam tiny --images 4    # a quick check that it runs
    python benchmarks/bench_scale.py --images 64 --gpus-per-worker 1   # a machine with 2 GPUs
    python benchmarks/bench_scale.py --ray-address 10.0.0.1:6379 --workdir /shared/tmp

Needs Ray (``pip install "fiftyone-usam[ray]"``) and FiftyOne's database (set
FIFTYONE_DATABASE_URI to use a private one); the dataset is temporary. Without
``--ray-address`` a local Ray is started once for the three rows (its start is shown apart).
On the CPU a Ray actor gets one CPU, and so one torch thread: the local row runs with
``--local-threads`` (default 1 on the CPU) so that the overhead compares like with like.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fiftyone_usam.embeddings.sam_backend import build_sam
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS
from fiftyone_usam.files import atomic_path, write_text_atomic
from fiftyone_usam.testing.sam import save_tiny_sam
from fiftyone_usam.testing.scenes import scene


def save_vit_b(folder: Path, seed: int = 0) -> Path:
    """A vit_b-sized SAM with random weights as ``vit_b_random.pth`` + ``vit_b_random.json``
    (the variant, under its own name: these are not the official weights)."""
    import torch

    vit_b = OFFICIAL_VARIANTS["vit_b"]
    config = {
        "name": "vit_b_random",
        "encoder_embed_dim": vit_b.encoder_embed_dim,
        "encoder_depth": vit_b.encoder_depth,
        "encoder_num_heads": vit_b.encoder_num_heads,
        "encoder_global_attn_indexes": list(vit_b.encoder_global_attn_indexes),
        "image_size": vit_b.image_size,
    }
    path = folder / "vit_b_random.pth"
    write_text_atomic(folder / "vit_b_random.json", json.dumps(config, indent=2))
    torch.manual_seed(seed)
    with atomic_path(path) as tmp:
        torch.save(build_sam(vit_b).state_dict(), tmp)
    return path


def save_images(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """``count`` simple scenes as JPEG files (the work does not depend on their content)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = folder / f"scene_{seed}.jpg"
        Image.fromarray(scene(height, width, seed)).save(path, quality=90)
        paths.append(path)
    return paths


def differences(local: Path, other: Path) -> str:
    """How a store differs from the local one: ``equal``, or what is not."""
    from fiftyone_usam.embeddings.store import EmbeddingStore

    a, b = EmbeddingStore.open(local), EmbeddingStore.open(other)
    if a.sample_ids() != b.sample_ids():
        return f"other sample ids ({len(a)} local, {len(b)} here)"
    worst, masks = 0.0, 0
    for sample_id in sorted(a.sample_ids()):
        x, y = a.get(sample_id), b.get(sample_id)
        diff = np.abs(x.embeddings.astype(np.float32) - y.embeddings.astype(np.float32))
        worst = max(worst, float(diff.max()))
        masks += sum(p != q for p, q in zip(x.mask_rles, y.mask_rles, strict=True))
    if worst == 0 and masks == 0:
        return "equal to local"
    return f"embeddings differ by up to {worst:.2e}, {masks} mask(s) differ"


def embed_row(
    dataset, checkpoint: Path, store: Path, args: argparse.Namespace, **engine
) -> tuple[float, dict]:
    """Seconds of one `embed` call into a fresh ``store``, and its report's execution."""
    import fiftyone_usam as usam

    started = time.perf_counter()
    report = usam.embed(
        dataset,
        store=store,
        checkpoint=checkpoint,
        points_per_side=args.points_per_side,
        device=args.device,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        progress=False,
        **engine,
    )
    seconds = time.perf_counter() - started
    if report.failed or report.embedded != len(dataset):
        raise SystemExit(f"embed did not embed every image: {report.summary()}")
    return seconds, report.execution


def local_row(dataset, checkpoint: Path, store: Path, args: argparse.Namespace) -> float:
    """The local run, with ``--local-threads`` torch threads (None: torch's own)."""
    import torch

    threads = torch.get_num_threads()
    if args.local_threads:
        torch.set_num_threads(args.local_threads)
    try:
        return embed_row(dataset, checkpoint, store, args, engine="local")[0]
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    args = parse_args()
    import fiftyone as fo
    import torch

    try:
        import ray
    except ImportError:
        raise SystemExit('this benchmark needs Ray: pip install "fiftyone-usam[ray]"') from None

    if args.local_threads is None and not torch.cuda.is_available():
        args.local_threads = 1  # as a Ray actor of one CPU gets
    folder = Path(tempfile.mkdtemp(prefix="usam-bench-scale-", dir=args.workdir))
    dataset = None
    try:
        checkpoint = save_tiny_sam(folder) if args.sam == "tiny" else save_vit_b(folder)
        paths = save_images(folder / "images", args.images, *_size(args.size))
        dataset = fo.Dataset()
        dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths], progress=False)
        started = time.perf_counter()
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
        print(header(args, time.perf_counter() - started, ray.cluster_resources()))
        rows = [("local", local_row(dataset, checkpoint, folder / "local", args), 1, "baseline")]
        for workers in (1, 2):
            engine = {"engine": "ray", "workers": workers, "gpus_per_worker": args.gpus_per_worker}
            store = folder / f"ray{workers}"
            seconds, execution = embed_row(dataset, checkpoint, store, args, **engine)
            ran = execution.get("workers_ran", workers)
            rows.append((f"ray x{workers}", seconds, ran, differences(folder / "local", store)))
        print_rows(rows, args.images)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if dataset is not None:
            dataset.delete()
        shutil.rmtree(folder, ignore_errors=True)


def _size(text: str) -> tuple[int, int]:
    """``WxH`` as ``(height, width)``."""
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def header(args: argparse.Namespace, ray_start: float, resources: dict) -> str:
    import torch

    where = args.ray_address or "a local Ray started by this benchmark"
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    return (
        f"SAM {args.sam} (random weights), {args.images} images of {args.size}, "
        f"{args.points_per_side**2} points, batch {args.batch_size}, shard {args.shard_size}, "
        f"device {args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}; local with "
        f"{args.local_threads or torch.get_num_threads()} torch thread(s)\n"
        f"Ray: {where} ({cpus:g} CPUs, {gpus:g} GPUs), started or joined in {ray_start:.1f} s"
    )


def print_rows(rows: list[tuple[str, float, int, str]], images: int) -> None:
    local, one = rows[0][1], rows[1][1]
    print(f"{'run':8s} {'workers':>7s} {'seconds':>8s} {'images/s':>9s} {'relative':>16s}  store")
    for name, seconds, ran, store in rows:
        if name == "local":
            ratio = ""
        elif name == "ray x1":
            ratio = f"{local / seconds:.2f}x local"  # of the images/s
        else:
            ratio = f"{one / seconds:.2f}x ray x1"
        print(f"{name:8s} {ran:7d} {seconds:8.1f} {images / seconds:9.3f} {ratio:>16s}  {store}")
    print(
        f"ratios of images/s: ray x1 / local {local / one:.2f} (the engine's overhead), "
        f"ray x2 / ray x1 {one / rows[2][1]:.2f} (the scaling; 2.00 is linear)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sam", choices=["vit_b", "tiny"], default="vit_b")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", default="500x375", help="WxH of the images")
    parser.add_argument("--points-per-side", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1, help="images per encoder call")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=1,
        help="images per shard; a Ray block is lcm(batch, shard) images, so small values "
        "spread few images over both workers",
    )
    parser.add_argument("--device", default=None, help="default: CUDA if available, else CPU")
    parser.add_argument("--gpus-per-worker", type=float, default=None)
    parser.add_argument("--ray-address", default=None, help="default: a local Ray")
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the checkpoint, images and stores go (a temporary folder in it, removed "
        "after); on a cluster, a folder every node sees. Default: the system's temp folder",
    )
    parser.add_argument(
        "--local-threads",
        type=int,
        default=None,
        help="torch threads of the local row (default: 1 on the CPU, like a Ray actor)",
    )
    args = parser.parse_args()
    if args.images < 2:
        parser.error("--images must be at least 2, so that both Ray workers get work")
    return args


if __name__ == "__main__":
    main()
