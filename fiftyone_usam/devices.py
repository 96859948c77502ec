"""Choosing the torch device and the precision to run on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from fiftyone_usam.errors import ConfigError

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Returns ``device``, or CUDA when available and the CPU otherwise.

    Raises:
        ConfigError: CUDA was asked for on a machine without it, or the name is not a device.
    """
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was asked for but CUDA is not available: use --device cpu"
        )
    return resolved


def resolve_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """The compute dtype: bf16 on CUDA and fp32 on the CPU when ``precision`` is ``auto``."""
    import torch

    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise ConfigError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    return table[precision]
