"""The training loop shared by the teacher and the student: held-out split, epochs, early stop.

Data and model stay on the training device; batches are cast to float32 as they are used, so
float16 embeddings from an EmbeddingStore are never copied whole.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.losses import pool_topk
from fiftyone_usam.head.model import MaskClassifier

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
# (model, embeddings (B, d, D) float32, targets (B, K), image indices (B,)) -> scalar loss
LossFn = Callable[[MaskClassifier, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Bags:
    """Bags of mask embeddings with their targets and held-out split, on the training device."""

    embeddings: torch.Tensor  # (N, d, D), on the training device, any float dtype
    targets: torch.Tensor  # (N, K) float multi-hot
    train: torch.Tensor  # (N_train,) int64 indices
    val: torch.Tensor  # (N_val,) int64 indices


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
) -> Bags:
    data = torch.as_tensor(embeddings)
    target = torch.as_tensor(targets, dtype=torch.float32)
    if data.ndim != 3 or target.shape != (data.shape[0], target.shape[-1]) or target.ndim != 2:
        raise ConfigError(
            f"expected embeddings (N, d, D) and targets (N, K), got {tuple(data.shape)} and "
            f"{tuple(target.shape)}"
        )
    train, val = split_images(target.numpy(), config.val_fraction, config.seed)
    return Bags(
        data.to(device),
        target.to(device),
        torch.from_numpy(train).to(device),
        torch.from_numpy(val).to(device),
    )


@torch.no_grad()
def standardize(model: MaskClassifier, bags: Bags) -> None:
    """Per-feature mean and std of the training masks, accumulated in float64 batch by batch."""
    total = torch.zeros(bags.embeddings.shape[-1], dtype=torch.float64, device=bags.train.device)
    squares = torch.zeros_like(total)
    count = 0
    for start in range(0, len(bags.train), 256):
        x = bags.embeddings[bags.train[start : start + 256]].reshape(-1, total.shape[0]).double()
        total += x.sum(0)
        squares += (x * x).sum(0)
        count += x.shape[0]
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
    shuffled = bags.train[torch.randperm(len(bags.train), generator=order).to(bags.train.device)]
    total = 0.0
    for start in range(0, len(shuffled), batch_size):
        idx = shuffled[start : start + batch_size]
        loss = loss_fn(model, bags.embeddings[idx].float(), bags.targets[idx], idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / max(1, len(shuffled))


@torch.no_grad()
def _evaluate(
    model: MaskClassifier, bags: Bags, loss_fn: LossFn, indices: torch.Tensor, batch_size: int
) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        total += float(loss_fn(model, bags.embeddings[idx].float(), bags.targets[idx], idx)) * len(
            idx
        )
    return total / len(indices) if len(indices) else math.nan


@torch.no_grad()
def _bag_accuracy(
    model: MaskClassifier, bags: Bags, indices: torch.Tensor, config: TrainConfig
) -> float:
    """Share of images whose best-scoring class (top-k pooled) is one of their labels."""
    if not len(indices):
        return math.nan
    logits = predict_bags(model, bags.embeddings[indices], config.batch_size)
    best = pool_topk(logits, config.topk_divisor).argmax(dim=1, keepdim=True)
    return float((torch.gather(bags.targets[indices], 1, best) > 0).float().mean())


@torch.no_grad()
def predict_bags(model: MaskClassifier, embeddings: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`(N, d, K)` logits of `(N, d, D)` bags, in eval mode, batch by batch."""
    model.eval()
    chunks = [
        model(embeddings[i : i + batch_size].float()) for i in range(0, len(embeddings), batch_size)
    ]
    return torch.cat(chunks)
