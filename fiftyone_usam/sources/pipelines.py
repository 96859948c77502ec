"""Loading a diffusers text-to-image pipeline, choosing its scheduler and memory options.

A model is a Hugging Face Hub id (``CompVis/stable-diffusion-v1-4``) or a local directory written
by ``save_pretrained`` / ``huggingface-cli download --local-dir``; both go through
``DiffusionPipeline.from_pretrained``, so any diffusers text-to-image pipeline works.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import CheckpointError, ConfigError
from fiftyone_usam.hub import model_source

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"

# --scheduler name -> diffusers class (each is built from the pipeline's scheduler config).
SCHEDULERS = {
    "default": None,
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def model_name(model: str | Path) -> str:
    """How a model is recorded: a local directory as its absolute path, a hub id as it is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def load_pipeline(
    model: str | Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    attention_slicing: bool = False,
    cpu_offload: bool = False,
) -> Any:
    """Loads a text-to-image pipeline onto a device.

    Args:
        model: a hub id or a local pipeline directory (with ``model_index.json``).
        device: where it runs.
        dtype: weights' dtype (fp16 on GPUs).
        attention_slicing: compute attention in slices (less memory, a little slower).
        cpu_offload: keep each sub-model on the CPU until it runs (small GPUs; needs the
            ``accelerate`` package).

    Returns:
        The pipeline, its progress bar off.

    Raises:
        CheckpointError: the directory does not exist or holds no pipeline, or the hub id cannot
            be loaded (offline, or no such model); the message says how to get the weights.
    """
    from diffusers import DiffusionPipeline

    source = check_source(model)
    try:
        pipe = DiffusionPipeline.from_pretrained(source, **{_dtype_keyword(): dtype})
    except (OSError, ValueError) as e:
        raise pipeline_load_error(str(model), e) from None
    _check_tokenizer(pipe, str(model))
    pipe.set_progress_bar_config(disable=True)
    if attention_slicing:
        pipe.enable_attention_slicing()
    if cpu_offload:
        _offload(pipe, device)
    else:
        pipe.to(device)
    return pipe


def set_scheduler(pipe: Any, name: str) -> str:
    """Replaces the pipeline's scheduler by the one named (see `SCHEDULERS`).

    Returns:
        The scheduler's class name, as recorded with each image.
    """
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}: use one of {', '.join(SCHEDULERS)}")
    class_name = SCHEDULERS[name]
    if class_name is not None and type(pipe.scheduler).__name__ != class_name:
        import diffusers

        pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config)
    return type(pipe.scheduler).__name__


def _dtype_keyword() -> str:
    """``dtype`` in recent diffusers (which deprecate ``torch_dtype``), else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def check_source(model: str | Path) -> str:
    """The pipeline directory or hub id ``model`` names (see `fiftyone_usam.hub.model_source`)."""

    return model_source(
        model,
        marker="model_index.json",
        kind="diffusers pipeline",
        noun="pipeline",
        option="--model",
        save="`DiffusionPipeline.from_pretrained(ID).save_pretrained(DIR)` or "
        "`huggingface-cli download ID --local-dir DIR`",
        example=DEFAULT_MODEL,
    )


def pipeline_load_error(model: str, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot load the text-to-image model {model!r} ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}). It is not a local directory, so "
        "it must come from the Hugging Face Hub, which needs network access (and the model's "
        "licence accepted on huggingface.co where it asks for one). Without network here, get "
        "the weights where there is network, with `huggingface-cli download "
        f"{model} --local-dir sd-weights` (or in Python: DiffusionPipeline.from_pretrained("
        f"{model!r}).save_pretrained('sd-weights')), copy that directory here and pass "
        "--model sd-weights (model='sd-weights' in Python). If the hub is reachable, check "
        "that HF_HUB_OFFLINE is not set."
    )


def _check_tokenizer(pipe: Any, model: str) -> None:
    """An incomplete offline download leaves a 2-token tokenizer that silently ruins prompts."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None and len(tokenizer) <= 2:
        raise CheckpointError(
            f"the tokenizer of {model!r} has only {len(tokenizer)} tokens: its tokenizer files "
            "are missing or incomplete. Download the whole model again (see --model)"
        )


def _offload(pipe: Any, device: torch.device) -> None:
    if device.type != "cuda":
        raise ConfigError(
            "CPU offload moves sub-models to a GPU as they run: it needs --device cuda"
        )
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ConfigError(
            "CPU offload needs the accelerate package: `pip install accelerate`"
        ) from None
    pipe.enable_model_cpu_offload(device=device)
