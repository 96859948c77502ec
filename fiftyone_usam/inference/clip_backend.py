"""Loading CLIP for the SAM+CLIP baseline, and encoding prompts and images with it.

A model is a Hugging Face Hub id (default ``openai/clip-vit-base-patch32``, CLIP ViT-B/32, the
most common CLIP in zero-shot baselines) or a local directory written by ``save_pretrained``
holding both the model and its processor; both load through transformers' ``CLIPModel`` and
``CLIPProcessor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.devices import resolve_device
from fiftyone_usam.errors import CheckpointError
from fiftyone_usam.hub import model_source

if TYPE_CHECKING:
    import torch

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation mean


@dataclass(frozen=True, eq=False)
class LoadedClip:
    """A CLIP in eval mode on its device, with its processor and identity.

    Attributes:
        model: the ``transformers.CLIPModel``.
        processor: its ``CLIPProcessor`` (tokenizer and image processor).
        name: the hub id, or the absolute path of the local directory.
        device: where the model runs.
    """

    model: Any
    processor: Any
    name: str
    device: torch.device

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature: logits are ``logit_scale * cosine similarity``."""
        return float(self.model.logit_scale.detach().exp())

    @property
    def image_mean(self) -> tuple[int, int, int]:
        """The uint8 RGB colour that the processor normalises to 0 (CLIP's mean pixel)."""
        mean = getattr(self.processor.image_processor, "image_mean", None) or _CLIP_MEAN
        r, g, b = (round(255 * float(m)) for m in mean)
        return r, g, b

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """Embeds prompts.

        Returns:
            `(P, D)` float32 unit vectors, one row per prompt.
        """
        import torch

        tokens = self.processor.tokenizer(
            list(prompts), padding=True, truncation=True, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            features = _pooled(self.model.get_text_features(**tokens))
        return _unit(features)

    def encode_images(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Embeds `(H, W, 3)` uint8 RGB images, ``batch_size`` per forward pass.

        Returns:
            `(n, D)` float32 unit vectors, one row per image.
        """
        import torch

        rows = []
        for start in range(0, len(images), batch_size):
            batch = list(images[start : start + batch_size])
            pixels = self.processor.image_processor(images=batch, return_tensors="pt")
            with torch.inference_mode():
                features = self.model.get_image_features(
                    pixel_values=pixels["pixel_values"].to(self.device, self.model.dtype)
                )
            rows.append(_unit(_pooled(features)))
        dim = int(self.model.config.projection_dim)
        return np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)


def load_clip(
    model: str | Path = DEFAULT_CLIP_MODEL, *, device: str | torch.device | None = None
) -> LoadedClip:
    """Loads a CLIP model and its processor.

    Args:
        model: a Hugging Face Hub id, or a directory written by ``save_pretrained`` with the
            model and its processor (tokenizer and image processor).
        device: torch device; default: CUDA if available, else the CPU.

    Raises:
        CheckpointError: the directory holds no CLIP, the hub id cannot be loaded (offline, or
            no such model), or the tokenizer is incomplete; the message says what to pass.
    """
    from transformers import CLIPModel, CLIPProcessor

    source = _check_source(model)
    target = resolve_device(device)
    try:
        clip: Any = CLIPModel.from_pretrained(source)
        processor = CLIPProcessor.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise _load_error(str(model), e) from None
    # Offline, a tokenizer whose files are missing loads as 2 special tokens instead of failing.
    if len(processor.tokenizer) <= 2:
        raise CheckpointError(
            f"the tokenizer of the CLIP model {str(model)!r} has only {len(processor.tokenizer)} "
            "tokens: its tokenizer files are missing or incomplete. Save the whole model again "
            "(model and processor) and pass its directory as --clip-model"
        )
    name = str(Path(source).resolve()) if Path(source).is_dir() else source
    return LoadedClip(clip.to(target).eval(), processor, name, target)


def _check_source(model: str | Path) -> str:
    return model_source(
        model,
        marker="config.json",
        kind="CLIP model",
        noun="CLIP",
        option="--clip-model",
        save="`CLIPModel.from_pretrained(ID).save_pretrained(DIR)` and the same with CLIPProcessor",
        example=DEFAULT_CLIP_MODEL,
    )


def _load_error(model: str, error: Exception) -> CheckpointError:
    first_line = str(error).splitlines()[0] if str(error) else ""
    return CheckpointError(
        f"cannot load the CLIP model {model!r} ({type(error).__name__}: {first_line}). It is "
        "not a local directory, so it must come from the Hugging Face Hub, which needs network "
        "access. Without network here, save it where there is network with `huggingface-cli "
        f"download {model} --local-dir clip-weights` (or in Python: CLIPModel.from_pretrained("
        f"{model!r}).save_pretrained('clip-weights') and the same with CLIPProcessor), copy "
        "that directory here and pass --clip-model clip-weights (clip_model='clip-weights' in "
        "Python). If the hub is reachable, check that HF_HUB_OFFLINE is not set."
    )


def _pooled(output: Any) -> torch.Tensor:
    """The projected features: transformers 5 wraps them in an output object, 4 does not."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _unit(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()
