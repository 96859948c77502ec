"""The training loop shared by the teacher and the student: held-out split, epochs, early stop.

The model trains on the training device. The embeddings are copied there once when they fit
in its free memory (checked with a margin on CUDA), else they stay in host memory and each
batch is gathered into a pinned buffer and copied without blocking (`devices.HostRows`);
either way batches are cast to float32 as they are used, so float16 embeddings from an
EmbeddingStore are never converted whole. On CUDA the forward passes run under bf16 autocast
(``TrainConfig.precision``); on the CPU training is float32 and deterministic for a seed.
Losses are summed on the device and read once per epoch, so the GPU is not made to wait on
every step.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fiftyone_usam.devices import HostRows, autocast, free_memory, resolve_dtype
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.config import Placement, TrainConfig
from fiftyone_usam.head.losses import pool_topk
from fiftyone_usam.head.model import MaskClassifier

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
# (model, embeddings (B, d, D) float32, targets (B, K), image indices (B,)) -> scalar loss
LossFn = Callable[[MaskClassifier, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

DEVICE_SHARE = 0.8  # the embeddings may take this share of the device's free memory, ...
WORKSPACE_BYTES = 256 << 20  # ... less this and the batches' room (model, optimiser, kernels)


@dataclass
class Bags:
    """Bags of mask embeddings with their targets and held-out split, as the loop sees them."""

    embeddings: torch.Tensor  # (N, d, D) any float dtype; on `device`, or in host memory
    targets: torch.Tensor  # (N, K) float multi-hot, on `device`
    train: torch.Tensor  # (N_train,) int64 indices, in host memory
    val: torch.Tensor  # (N_val,) int64 indices, in host memory
    device: torch.device
    placement: Literal["device", "host"] = "device"
    compute_dtype: torch.dtype = torch.float32  # of the forward passes; float32: no autocast

    def __post_init__(self) -> None:
        self._host = HostRows(self.embeddings, self.device) if self.placement == "host" else None

    def batches(
        self, indices: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, idx)`` per batch of the `(n,)` host ``indices``, in order: `(B, d, D)` float32
        embeddings and their `(B,)` indices, both on the training device."""
        on_device = indices.to(self.device)
        for start in range(0, len(indices), batch_size):
            idx = on_device[start : start + batch_size]
            if self._host is None:
                yield self.embeddings[idx].float(), idx
            else:
                yield self._host(indices[start : start + batch_size]).float(), idx

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Mixed precision for the forward passes (nothing when training in float32)."""
        return autocast(self.device, self.compute_dtype)


def split_images(
    targets: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A held-out split stratified by label set; every label set keeps at least one training image.

    Args:
        targets: `(N, K)` multi-hot bag targets.
        val_fraction: share of each label set's images held out (rounded).
        seed: seeds the shuffle.

    Returns:
        ``(train, val)`` sorted `int64` index arrays.
    """
    rng = np.random.default_rng(seed)
    _, groups = np.unique(targets, axis=0, return_inverse=True)
    train: list[int] = []
    val: list[int] = []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        held = min(round(len(members) * val_fraction), len(members) - 1)
        val.extend(members[:held])
        train.extend(members[held:])
    return np.sort(np.array(train, np.int64)), np.sort(np.array(val, np.int64))


def make_bags(
    embeddings: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    *,
    free_bytes: int | None = None,
) -> Bags:
    """The training set on ``device`` (or in host memory, see `choose_placement`), split.

    Args:
        embeddings: `(N, d, D)` float, any float dtype (kept as it is: float16 stays float16).
        targets: `(N, K)` multi-hot.
        config: the split's settings, ``placement`` and ``precision``.
        device: the training device.
        free_bytes: memory free on ``device`` for the ``auto`` placement; default: measured
            (`devices.free_memory`). A small value forces host memory.

    Raises:
        ConfigError: arrays of the wrong shapes.
    """
    data = torch.as_tensor(embeddings)
    target = torch.as_tensor(targets, dtype=torch.float32)
    if data.ndim != 3 or target.shape != (data.shape[0], target.shape[-1]) or target.ndim != 2:
        raise ConfigError(
            f"expected embeddings (N, d, D) and targets (N, K), got {tuple(data.shape)} and "
            f"{tuple(target.shape)}"
        )
    train, val = split_images(target.numpy(), config.val_fraction, config.seed)
    data_bytes = data.numel() * data.element_size()
    free = free_memory(device) if free_bytes is None else free_bytes
    placement, why = choose_placement(
        config.placement, device, data_bytes, _working_bytes(data, target, config), free
    )
    if placement == "device":
        data, placement, why = _move(data, device, config.placement, why)
    logger.info(
        "head training set: %.0f MB of embeddings %s (%s)",
        data_bytes / 2**20,
        f"on {device}" if placement == "device" else f"in host memory, batches copied to {device}",
        why,
    )
    return Bags(
        data,
        target.to(device),
        torch.from_numpy(train),
        torch.from_numpy(val),
        device,
        placement,
        resolve_dtype(config.precision, device),
    )


def choose_placement(
    placement: Placement,
    device: torch.device,
    data_bytes: int,
    working_bytes: int,
    free_bytes: int | None,
) -> tuple[Literal["device", "host"], str]:
    """Where the training embeddings go, and why (for the log).

    ``auto`` puts them on ``device`` when ``data_bytes`` fits in ``DEVICE_SHARE`` of
    ``free_bytes`` less ``working_bytes`` (the model, optimiser, teacher logits and a few
    batches); on the CPU, or when the free memory is unknown, they go on ``device`` unchecked.
    """
    if placement != "auto":
        return placement, f"placement {placement!r} asked for"
    if device.type == "cpu":
        return "device", "the CPU trains from host memory"
    if free_bytes is None:
        return "device", f"the free memory of {device} is not known"
    budget = int(free_bytes * DEVICE_SHARE) - working_bytes
    if data_bytes <= budget:
        return "device", f"fits: {free_bytes / 2**20:.0f} MB free"
    return "host", (
        f"{data_bytes / 2**20:.0f} MB do not fit in {max(budget, 0) / 2**20:.0f} MB "
        f"({DEVICE_SHARE:.0%} of {free_bytes / 2**20:.0f} MB free less room to train)"
    )


def _working_bytes(data: torch.Tensor, targets: torch.Tensor, config: TrainConfig) -> int:
    """Device memory besides the embeddings: float32 batches with their activations, and the
    teacher's `(N, d, K)` float32 logits with the student's predictions of them."""
    n, d, dim = data.shape
    batch = max(config.batch_size, 256) * d * dim * 4
    logits = n * d * targets.shape[1] * 4
    return WORKSPACE_BYTES + 8 * batch + 2 * logits


def _move(
    data: torch.Tensor, device: torch.device, asked: Placement, why: str
) -> tuple[torch.Tensor, Literal["device", "host"], str]:
    """``data`` on ``device``; in ``auto`` mode, host memory when the device runs out anyway."""
    try:
        return data.to(device), "device", why
    except torch.cuda.OutOfMemoryError:
        if asked == "device":
            raise
        torch.cuda.empty_cache()
        return data, "host", "the copy to the device ran out of memory"


@torch.no_grad()
def standardize(model: MaskClassifier, bags: Bags) -> None:
    """Per-feature mean and std of the training masks, accumulated in float64 batch by batch."""
    total = torch.zeros(bags.embeddings.shape[-1], dtype=torch.float64, device=bags.device)
    squares = torch.zeros_like(total)
    count = 0
    for x, _ in bags.batches(bags.train, 256):
        rows = x.reshape(-1, total.shape[0]).double()
        total += rows.sum(0)
        squares += (rows * rows).sum(0)
        count += rows.shape[0]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    model.set_standardization(mean.float(), std.float())


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seeds torch for a block (init, dropout) and restores the caller's RNG state after it."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def run_epochs(
    model: MaskClassifier,
    bags: Bags,
    loss_fn: LossFn,
    config: TrainConfig,
    progress: ProgressCallback | None,
    name: str,
) -> dict[str, float]:
    """Adam over shuffled batches, keeping the weights of the best held-out epoch."""
    started = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(config.seed)
    monitor = bags.val if len(bags.val) else bags.train
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        train_loss = _epoch(model, bags, loss_fn, config.batch_size, optimizer, order)
        held_loss = _evaluate(model, bags, loss_fn, monitor, config.batch_size)
        logger.info(
            "%s epoch %d: train loss %.4f, held-out loss %.4f", name, epoch, train_loss, held_loss
        )
        if held_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = held_loss, epoch, copy.deepcopy(model.state_dict())
        stop = epoch - best_epoch >= config.patience
        if progress is not None:
            progress(config.epochs if stop else epoch, config.epochs)
        if stop:
            break
    model.load_state_dict(best_state)
    model.eval()
    return {
        "epochs": float(epoch),
        "best_epoch": float(best_epoch),
        "train_loss": _evaluate(model, bags, loss_fn, bags.train, config.batch_size),
        "val_loss": best_loss if len(bags.val) else math.nan,
        "train_bag_accuracy": _bag_accuracy(model, bags, bags.train, config),
        "val_bag_accuracy": _bag_accuracy(model, bags, bags.val, config),
        "num_train": float(len(bags.train)),
        "num_val": float(len(bags.val)),
        "data_on_device": float(bags.placement == "device"),
        "mixed_precision": float(bags.compute_dtype != torch.float32),
        "seconds": time.perf_counter() - started,
    }


def _epoch(
    model: MaskClassifier,
    bags: Bags,
    loss_fn: LossFn,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    order: torch.Generator,
) -> float:
    shuffled = bags.train[torch.randperm(len(bags.train), generator=order)]
    # summed in float64 on the device: the same sum as Python floats, without a sync per step
    total = torch.zeros((), dtype=torch.float64, device=bags.device)
    for x, idx in bags.batches(shuffled, batch_size):
        with bags.autocast():
            loss = loss_fn(model, x, bags.targets[idx], idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * len(idx)
    return float(total) / max(1, len(shuffled))


@torch.no_grad()
def _evaluate(
    model: MaskClassifier, bags: Bags, loss_fn: LossFn, indices: torch.Tensor, batch_size: int
) -> float:
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=bags.device)
    for x, idx in bags.batches(indices, batch_size):
        with bags.autocast():
            loss = loss_fn(model, x, bags.targets[idx], idx)
        total += loss.double() * len(idx)
    return float(total) / len(indices) if len(indices) else math.nan


@torch.no_grad()
def _bag_accuracy(
    model: MaskClassifier, bags: Bags, indices: torch.Tensor, config: TrainConfig
) -> float:
    """Share of images whose best-scoring class (top-k pooled) is one of their labels."""
    if not len(indices):
        return math.nan
    logits = predict_bags(model, bags, indices, config.batch_size)
    best = pool_topk(logits, config.topk_divisor).argmax(dim=1, keepdim=True)
    targets = bags.targets[indices.to(bags.device)]
    return float((torch.gather(targets, 1, best) > 0).float().mean())


@torch.no_grad()
def predict_bags(
    model: MaskClassifier, bags: Bags, indices: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """`(n, d, K)` float32 logits of the bags at the `(n,)` host ``indices``, in eval mode,
    batch by batch, on the training device."""
    model.eval()
    chunks = []
    for x, _ in bags.batches(indices, batch_size):
        with bags.autocast():
            chunks.append(model(x).float())
    return torch.cat(chunks)
