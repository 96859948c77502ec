"""Operator: generate training images of each class with a text-to-image diffusion model."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.devices import PRECISIONS
from fiftyone_usam.sources.pipelines import DEFAULT_MODEL, SCHEDULERS

from .engine import engine_inputs, engine_kwargs
from .progress import progress_callback, usam_config
from .validation import (
    classes_input,
    invalidate,
    multiple_of_8_error,
    name_error,
    pipeline_error,
    prompt_error,
)


class GenerateOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "generate",
            "generate training images",
            (
                "Makes training images of each class you name with Stable Diffusion (or any "
                "diffusers text-to-image model) into a labelled dataset; resumable."
            ),
        )

    def resolve_input(self, ctx):
        params = ctx.params
        inputs = types.Object()
        classes_input(inputs, params)
        dataset = inputs.str(
            "dataset",
            required=True,
            default="usam-synthetic",
            label="Dataset",
            description="Created if absent; an existing one must hold the same classes.",
        )
        invalidate(dataset, name_error(params.get("dataset"), "dataset"))
        inputs.int("per_class", default=200, min=0, label="Images per class")
        model = inputs.str(
            "model",
            default=DEFAULT_MODEL,
            label="Model",
            description="Hugging Face Hub id, or a pipeline directory on the server.",
        )
        invalidate(model, pipeline_error(params.get("model")))
        prompt = inputs.str(
            "prompt",
            default="a photo of a {}",
            label="Prompt",
            description="{} is the class name (classes with their own prompts keep them).",
        )
        invalidate(prompt, prompt_error(params.get("prompt")))
        inputs.str("negative_prompt", label="Negative prompt (optional)")
        inputs.int("steps", default=50, min=1, label="Denoising steps")
        inputs.float("guidance", default=7.5, label="Guidance scale")
        inputs.enum("scheduler", list(SCHEDULERS), default="default", label="Scheduler")
        for side in ("height", "width"):
            prop = inputs.int(
                side, min=8, label=f"{side.title()} (optional)", description="Multiple of 8."
            )
            invalidate(prop, multiple_of_8_error(params.get(side), side))
        inputs.int("batch_size", default=4, min=1, label="Batch size")
        inputs.int("seed", default=0, label="Seed")
        inputs.str("images_dir", label="Images directory (optional)")
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        inputs.enum("precision", list(PRECISIONS), default="auto", label="Precision")
        inputs.bool("attention_slicing", default=False, label="Attention slicing")
        inputs.bool("cpu_offload", default=False, label="CPU offload (needs accelerate)")
        engine_inputs(inputs, params, work="the diffusion model runs")
        return types.Property(inputs, view=types.View(label="U-SAM: generate training images"))

    def execute(self, ctx):
        from fiftyone_usam.stages.generate import generate

        params = ctx.params
        report = generate(
            params["classes"],
            dataset=params["dataset"],
            per_class=int_param(params, "per_class", 200),
            model=params.get("model") or DEFAULT_MODEL,
            prompt=params.get("prompt") or None,
            negative_prompt=params.get("negative_prompt") or None,
            steps=int_param(params, "steps", 50),
            guidance=float(params.get("guidance", 7.5)),
            scheduler=params.get("scheduler") or "default",
            height=params.get("height") or None,
            width=params.get("width") or None,
            batch_size=int_param(params, "batch_size", 4),
            seed=int_param(params, "seed", 0),
            images_dir=params.get("images_dir") or None,
            device=params.get("device") or None,
            precision=params.get("precision") or "auto",
            attention_slicing=bool(params.get("attention_slicing")),
            cpu_offload=bool(params.get("cpu_offload")),
            **engine_kwargs(params),
            progress=progress_callback(ctx, "images"),
        )
        show_dataset(ctx, report.dataset)
        return {
            "summary": report.summary(),
            "dataset": report.dataset,
            "generated": report.generated,
            "already_done": report.already_done,
            "flagged": report.flagged,
            "execution": report.execution,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        outputs.str("dataset", label="Dataset")
        return types.Property(outputs)


def int_param(params, key, default):
    """An int parameter (form defaults are not applied when an operator is called from Python)."""
    value = params.get(key)
    return default if value is None else int(value)


def show_dataset(ctx, name):
    """Reloads the App's dataset if it is the one written, else opens that one."""
    if ctx.dataset is not None and ctx.dataset.name == name:
        ctx.ops.reload_dataset()
    else:
        ctx.ops.open_dataset(name)
