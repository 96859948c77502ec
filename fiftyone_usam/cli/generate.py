"""``usam generate``: training images of each class from a text-to-image diffusion model."""

from __future__ import annotations

from pathlib import Path

import click

from fiftyone_usam.cli.common import device_option, engine_options
from fiftyone_usam.devices import PRECISIONS
from fiftyone_usam.sources.pipelines import DEFAULT_MODEL, SCHEDULERS


@click.command("generate")
@click.option(
    "--classes",
    default=None,
    help='Class names ("person,dog,potted plant") or an ontology YAML file. '
    "Default: the classes stored with --dataset.",
)
@click.option("--dataset", required=True, help="FiftyOne dataset to create or add to.")
@click.option(
    "--per-class",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Images per class the dataset should hold (with these settings).",
)
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Hugging Face Hub id or local directory of a diffusers text-to-image pipeline.",
)
@click.option(
    "--prompt",
    default=None,
    help='Prompt template, {} is the class name. Default: the ontology\'s ("a photo of a {}").',
)
@click.option("--negative-prompt", default=None, help="For classes without their own.")
@click.option(
    "--steps", type=click.IntRange(min=1), default=50, show_default=True, help="Denoising steps."
)
@click.option(
    "--guidance",
    type=float,
    default=7.5,
    show_default=True,
    help="Classifier-free guidance scale.",
)
@click.option(
    "--scheduler",
    type=click.Choice(list(SCHEDULERS)),
    default="default",
    show_default=True,
    help="Sampler; default: the pipeline's own (PNDM for Stable Diffusion v1.4).",
)
@click.option("--height", type=click.IntRange(min=8), default=None, help="Pixels (multiple of 8).")
@click.option("--width", type=click.IntRange(min=8), default=None, help="Pixels (multiple of 8).")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Prompts per pipeline call.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Run seed; each image's seed is derived from (seed, class, index).",
)
@click.option(
    "--images-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where images are written. Default: <FiftyOne dataset dir>/usam/<dataset>/images.",
)
@device_option
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: fp16 on CUDA, fp32 on CPU.",
)
@click.option("--attention-slicing", is_flag=True, help="Less GPU memory, a little slower.")
@click.option(
    "--cpu-offload", is_flag=True, help="Sub-models wait on the CPU (small GPUs; needs accelerate)."
)
@engine_options
def generate_command(
    classes: str | None,
    dataset: str,
    per_class: int,
    model: str,
    prompt: str | None,
    negative_prompt: str | None,
    steps: int,
    guidance: float,
    scheduler: str,
    height: int | None,
    width: int | None,
    batch_size: int,
    seed: int,
    images_dir: Path | None,
    device: str | None,
    precision: str,
    attention_slicing: bool,
    cpu_offload: bool,
    engine: str,
    workers: int,
    gpus_per_worker: float | None,
    ray_address: str | None,
) -> None:
    """Generate training images of each class with Stable Diffusion (or any diffusers model).

    Each image's seed comes from (seed, class, index), so a re-run reproduces it, and images the
    dataset already holds are not made again: an interrupted run resumes where it stopped.
    With --engine ray the images are made on --workers Ray actors, each loading --model (a hub
    id or a directory every node sees) once and writing into --images-dir.
    """
    from fiftyone_usam.stages.generate import generate

    report = generate(
        classes,
        dataset=dataset,
        per_class=per_class,
        model=model,
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        height=height,
        width=width,
        batch_size=batch_size,
        seed=seed,
        images_dir=images_dir,
        device=device,
        precision=precision,  # type: ignore[arg-type]
        attention_slicing=attention_slicing,
        cpu_offload=cpu_offload,
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        ray_address=ray_address,
        progress=True,
    )
    click.echo(report.summary())
