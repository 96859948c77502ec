"""`Generator`: runs a diffusers text-to-image pipeline on batches of `ImageJob`s.

The driver around the pipeline: device and precision, the scheduler, one CPU random generator
per image (so an image's starting noise depends only on its seed, not on its batch or device),
and the safety checker's verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.devices import Precision, resolve_device, resolve_dtype
from fiftyone_usam.sources.pipelines import load_pipeline, set_scheduler

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from fiftyone_usam.sources.jobs import GenerationConfig, ImageJob


@dataclass
class Generator:
    """A loaded text-to-image pipeline and where it runs.

    Attributes:
        pipe: a diffusers pipeline taking ``prompt``, ``negative_prompt``, ``generator``, ...
        device: the device it runs on.
    """

    pipe: Any
    device: torch.device

    @classmethod
    def create(
        cls,
        model: str | Path | Any,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
        *,
        attention_slicing: bool = False,
        cpu_offload: bool = False,
    ) -> Generator:
        """Loads ``model`` (a hub id or directory) or wraps an already-loaded pipeline.

        ``precision`` ``auto`` is fp16 on CUDA (as Stable Diffusion is usually run) and fp32 on
        the CPU. A loaded pipeline keeps its dtype, and its device unless ``device`` is given.
        """
        if not isinstance(model, str | Path):
            # a new pipeline object over the same modules, so choosing a scheduler or turning
            # the progress bar off leaves the caller's pipeline as it was
            pipe = type(model)(**model.components)
            if device is not None:
                pipe.to(resolve_device(device))
            pipe.set_progress_bar_config(disable=True)
            return cls(pipe, pipe.device)
        resolved = resolve_device(device)
        dtype = _dtype(precision, resolved)
        pipe = load_pipeline(
            model,
            device=resolved,
            dtype=dtype,
            attention_slicing=attention_slicing,
            cpu_offload=cpu_offload,
        )
        return cls(pipe, resolved)

    def use_scheduler(self, name: str) -> str:
        """Sets the scheduler by name (see ``SCHEDULERS``); returns its class name."""
        return set_scheduler(self.pipe, name)

    def run(
        self, jobs: list[ImageJob], config: GenerationConfig
    ) -> tuple[list[Image.Image], list[bool]]:
        """Makes one image per job in a single pipeline call.

        Returns:
            The images (PIL, RGB) and, per image, whether the safety checker blanked it.
        """
        import torch

        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
        negatives = [job.negative_prompt or "" for job in jobs]
        output = self.pipe(
            prompt=[job.prompt for job in jobs],
            negative_prompt=negatives if any(negatives) else None,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            height=config.height,
            width=config.width,
            generator=generators,
            output_type="pil",
        )
        flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(jobs)
        return [image.convert("RGB") for image in output.images], [bool(f) for f in flagged]


def _dtype(precision: Precision, device: torch.device) -> torch.dtype:
    import torch

    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return resolve_dtype(precision, device)
