"""Choosing the torch device and the precision to run on it, and how much memory it has left."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

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


def free_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on ``device``; None where it cannot be measured.

    On CUDA: the driver's free memory plus what torch's caching allocator holds unused (it is
    this process's to reuse). The CPU and other devices: None (host memory is not checked).
    """
    import torch

    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision in ``dtype`` on ``device``, or nothing when ``dtype`` is float32."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Runs a block with ``count`` torch intra-op threads (None: leaves torch's setting), then
    restores the caller's. Small CPU forward passes beside other work (a writer thread, another
    process) run faster on one thread than on spinning ones."""
    import torch

    if count is None or count == torch.get_num_threads():
        yield
        return
    if count < 1:
        raise ConfigError(f"threads must be at least 1, got {count}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class HostRows:
    """Copies rows of a tensor kept in host memory to a device, a batch at a time.

    On CUDA the rows are gathered into one of two pinned (page-locked) buffers and copied from
    it without blocking, so the CPU gathers the next batch while the GPU works on this one; a
    buffer is refilled only once the copy out of it has finished. Pinning the whole tensor
    instead would copy it and page-lock all of it. Elsewhere the buffers are ordinary memory.

    Args:
        data: `(N, ...)` tensor in host memory.
        device: where the batches go.
    """

    def __init__(self, data: torch.Tensor, device: torch.device) -> None:
        self.data = data
        self.device = device
        self.pinned = device.type == "cuda"
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._copied: list[Any] = [None, None]  # CUDA events: the copy out of each buffer
        self._turn = 0

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """`(B, ...)`: the rows at the `(B,)` int64 host indices ``rows``, a new tensor on the
        device (safe to keep: the buffers are never handed out)."""
        import torch

        slot, self._turn = self._turn, 1 - self._turn
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()
        buffer = self._buffer(slot, len(rows))
        torch.index_select(self.data, 0, rows, out=buffer)
        out = buffer.to(self.device, non_blocking=self.pinned, copy=True)
        if self.pinned:
            self._copied[slot] = torch.cuda.Event()
            self._copied[slot].record()
        return out

    def _buffer(self, slot: int, count: int) -> torch.Tensor:
        import torch

        buffer = self._buffers[slot]
        if buffer is None or len(buffer) < count:
            shape = (count, *self.data.shape[1:])
            try:
                buffer = torch.empty(shape, dtype=self.data.dtype, pin_memory=self.pinned)
            except RuntimeError:  # page-locked memory refused: ordinary memory, blocking copies
                self.pinned = False
                buffer = torch.empty(shape, dtype=self.data.dtype)
            self._buffers[slot] = buffer
        return buffer[:count]
