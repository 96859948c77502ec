"""Images per second of training-image generation (`fiftyone_usam.sources`), not a test.

Times the library's own generation step (`Generator.run`: one pipeline call per batch, one seeded
CPU generator per image), without writing files or the dataset.

    python benchmarks/bench_generate.py                     # the tiny random pipeline, CPU
    python benchmarks/bench_generate.py --model DIR --steps 50 --batch-size 4 --device cuda
    python benchmarks/bench_generate.py --compare           # needs CUDA, see below

--compare builds a Stable Diffusion v1.x-size pipeline with random weights (860M-parameter UNet,
its VAE, a CLIP ViT-L/14 text encoder; speed does not depend on the weights' values) and prints
images/second at 512x512 in fp16 for: 50-step PNDM (SD v1.4's default) and 20- and 25-step
DPM-Solver++, at batch sizes 1, 8 and 16, eager and with the UNet under torch.compile. With
`--arch tiny --device cpu --size 64 --precision fp32 --batch-sizes 1,2` the same table runs on a
CPU in seconds (to check the script; those figures mean nothing for a GPU).
"""

from __future__ import annotations

import argparse
import time

import torch

from fiftyone_usam.ontology import load_ontology
from fiftyone_usam.sources.generation import Generator
from fiftyone_usam.sources.jobs import GenerationConfig, plan_jobs
from fiftyone_usam.testing.pipelines import build_random_pipeline

CLASSES = "person,dog,cat,car,bicycle,potted plant,bottle,chair"
COMPARED = [("pndm", 50), ("dpm++", 20), ("dpm++", 25)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(
    generator: Generator, config: GenerationConfig, batch_size: int, images: int, repeats: int
) -> float:
    """Best of ``repeats`` timed runs of ``images`` images, after one warm-up batch."""
    per_class = -(-images // len(load_ontology(CLASSES)))
    jobs = plan_jobs(config, load_ontology(CLASSES), per_class, set())[:images]
    generator.run(jobs[:batch_size], config)  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        sync(generator.device)
        start = time.perf_counter()
        for i in range(0, len(jobs), batch_size):
            generator.run(jobs[i : i + batch_size], config)
        sync(generator.device)
        best = min(best, time.perf_counter() - start)
    return len(jobs) / best


def configured(args: argparse.Namespace) -> None:
    """images/s of one pipeline with the settings given."""
    model = args.model or build_random_pipeline(args.arch)
    generator = Generator.create(model, args.device, args.precision)
    scheduler = generator.use_scheduler(args.scheduler)
    size = args.size
    config = GenerationConfig(
        model=str(args.model or f"random {args.arch}"),
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        height=size,
        width=size,
    )
    rate = images_per_second(generator, config, args.batch_size, args.images, args.repeats)
    dtype = next(generator.pipe.unet.parameters()).dtype
    print(
        f"model {config.model}, {size or 'default'} px, {args.steps} steps {scheduler}, "
        f"guidance {args.guidance}, batch {args.batch_size}, {args.images} images, device "
        f"{generator.device}, {str(dtype).replace('torch.', '')}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(f"{rate:.3f} images/s ({1 / rate:.3f} s/image)")


def compare(args: argparse.Namespace) -> None:
    """The scheduler x batch x compile table on a Stable Diffusion v1.x-size pipeline."""
    device = torch.device(args.device)
    if device.type != "cuda" and args.arch == "sd-v1":
        raise SystemExit(
            "--compare with the SD v1.x-size model needs a CUDA device (it takes minutes per "
            "image on a CPU); to check the script on a CPU add --arch tiny --device cpu"
        )
    pipe = build_random_pipeline(args.arch)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        "fp16" if args.precision == "auto" else args.precision
    ]
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    generator = Generator(pipe, device)
    eager_unet = pipe.unet
    batches = [int(b) for b in args.batch_sizes.split(",")]
    compile_modes = [False, True] if args.compile == "both" else [args.compile == "on"]
    print(
        f"{args.arch} pipeline, random weights, {args.size}x{args.size}, "
        f"{str(dtype).replace('torch.', '')}, guidance {args.guidance}, device "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else device}, "
        f"torch {torch.__version__}"
    )
    print(f"{'scheduler':28s} {'steps':>5s} {'batch':>5s} {'compile':>7s} {'images/s':>9s}")
    rates = {}
    for compiled in compile_modes:
        pipe.unet = torch.compile(eager_unet) if compiled else eager_unet
        for name, steps in COMPARED:
            scheduler = generator.use_scheduler(name)
            config = GenerationConfig(
                model=args.arch,
                steps=steps,
                guidance=args.guidance,
                scheduler=name,
                height=args.size,
                width=args.size,
            )
            for batch in batches:
                images = max(batch, args.images)
                rate = images_per_second(generator, config, batch, images, args.repeats)
                rates[name, steps, batch, compiled] = rate
                on = "on" if compiled else "off"
                print(f"{scheduler:28s} {steps:5d} {batch:5d} {on:>7s} {rate:9.3f}", flush=True)
    base = rates.get(("pndm", 50, batches[0], False))
    if base:
        print(f"ratios to PNDM 50 steps, batch {batches[0]}, eager:")
        for (name, steps, batch, compiled), rate in rates.items():
            on = "compiled" if compiled else "eager"
            print(f"  {name} {steps} steps, batch {batch}, {on}: {rate / base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub id or pipeline directory")
    parser.add_argument(
        "--arch",
        default=None,
        choices=["tiny", "sd-v1"],
        help="random pipeline to build when no --model (default: tiny; with --compare: sd-v1)",
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--scheduler", default="default")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--size", type=int, default=None, help="pixels; default: the model's")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's choice)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="PNDM 50 vs DPM-Solver++ 20/25, batches, torch.compile (GPU)",
    )
    parser.add_argument("--batch-sizes", default="1,8,16", help="for --compare")
    parser.add_argument(
        "--compile",
        default="both",
        choices=["off", "on", "both"],
        help="for --compare: the UNet under torch.compile",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        args.arch = args.arch or "sd-v1"
        args.size = args.size or (512 if args.arch == "sd-v1" else 64)
        compare(args)
    else:
        args.arch = args.arch or "tiny"
        configured(args)


if __name__ == "__main__":
    main()
