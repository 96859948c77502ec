"""Adapting a trained head to the user's images without labels (self-training on arrays).

A head trained on generated or crawled images meets other cameras, styles and backgrounds at
prediction time. `adapt_head` takes the target images' mask embeddings (and optionally those of
an augmented view of each, `fiftyone_usam.embeddings.views`) and returns a new head, with four
ingredients, each with a switch in `AdaptConfig`:

1. target statistics: the input standardisation re-estimated on the target (AdaBN);
2. pseudo-labels: masks the source head (with 1.) is sure of are trained towards its class,
   masks it is unsure of towards uniform, so they stay background;
3. cross-view consistency: matching masks of the two views get agreeing distributions;
4. anchor: the adapted head stays near the frozen source head on every mask, and keeps its class
   balance on confident masks (no collapse to one class or to background).

`measure_target` gives the label-free figures (class shares, background share, entropy, view
agreement) of a head on the target, before and after. Everything runs on the head's device; on
the CPU it is deterministic for ``AdaptConfig.seed``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.adapt_config import INGREDIENTS as INGREDIENTS
from fiftyone_usam.head.adapt_config import AdaptConfig
from fiftyone_usam.head.adapt_losses import (
    anchor_loss,
    balance_loss,
    consistency_loss,
    pseudo_label_loss,
    uniform_loss,
)
from fiftyone_usam.head.classifier import Head, labels_from_proba
from fiftyone_usam.head.config import default_threshold
from fiftyone_usam.head.loop import seeded
from fiftyone_usam.head.model import MaskClassifier

MIN_TARGET_IMAGES = 8  # fewer images give too few confident masks per class to learn from
_CHUNK = 256  # images per no-grad forward pass


@dataclass(frozen=True)
class TargetFigures:
    """What a head does on target images, measured without labels.

    Attributes:
        classes: the head's classes.
        class_shares: per class, the share of the target masks labelled with it.
        background_share: the share of the target masks sent to background.
        mean_entropy: mean entropy of the masks' class distributions over ``log C`` (0: every
            mask certain, 1: every mask uniform).
        view_agreement: share of masks labelled alike in both views; None without views.
        num_images: ``N``.
        num_masks: ``N * d``.
    """

    classes: tuple[str, ...]
    class_shares: tuple[float, ...]
    background_share: float
    mean_entropy: float
    view_agreement: float | None
    num_images: int
    num_masks: int

    def summary(self) -> str:
        """One line: background share, entropy, view agreement and the class shares."""
        pairs = zip(self.classes, self.class_shares, strict=True)
        shares = ", ".join(f"{name} {share:.1%}" for name, share in pairs)
        views = "" if self.view_agreement is None else f", views agree {self.view_agreement:.1%}"
        return (
            f"{self.num_masks} masks of {self.num_images} images: background "
            f"{self.background_share:.1%}, entropy {self.mean_entropy:.3f}{views}; {shares}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures, the class shares keyed by class name."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "classes"}
        out["class_shares"] = dict(zip(self.classes, self.class_shares, strict=True))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetFigures:
        """The figures `as_dict` gave (as an adapted head's ``metrics["adaptation"]`` keeps
        them)."""
        shares = data["class_shares"]
        rest = {k: v for k, v in data.items() if k != "class_shares"}
        return cls(classes=tuple(shares), class_shares=tuple(shares.values()), **rest)


@dataclass
class _Plan:
    """What the frozen source head says about the target, computed once."""

    source_logits: torch.Tensor  # (N, d, K) float32
    labels: torch.Tensor  # (N, d) int64 source class
    confident: torch.Tensor  # (N, d) bool
    uncertain: torch.Tensor  # (N, d) bool
    prior: torch.Tensor  # (K,) mean source distribution on confident masks


def measure_target(
    head: Head,
    target: np.ndarray | torch.Tensor,
    views: np.ndarray | torch.Tensor | None = None,
) -> TargetFigures:
    """The label-free figures of ``head`` on target embeddings (see `TargetFigures`).

    Args:
        head: the head to measure.
        target: `(N, d, input_dim)` float16 or float32 mask embeddings, one bag per image.
        views: optional `(N, d, input_dim)`: the same images under an augmentation, mask ``i``
            of a view at the same image location as mask ``i`` of ``target``.

    Raises:
        ConfigError: embeddings of the wrong shape.
    """
    x, v = _check_arrays(head, target, views, minimum=1)
    probs = _probabilities(head.model, x)
    labels = labels_from_proba(probs, head.threshold)
    k = head.num_classes
    counts = torch.bincount(labels.reshape(-1), minlength=k + 1).double() / labels.numel()
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    agreement = None
    if v is not None:
        view_labels = labels_from_proba(_probabilities(head.model, v), head.threshold)
        agreement = float((view_labels == labels).double().mean())
    return TargetFigures(
        classes=head.classes,
        class_shares=tuple(float(c) for c in counts[1:]),
        background_share=float(counts[0]),
        mean_entropy=float(entropy.mean()) / math.log(k) if k > 1 else 0.0,
        view_agreement=agreement,
        num_images=int(x.shape[0]),
        num_masks=int(x.shape[0] * x.shape[1]),
    )


def adapt_head(
    head: Head,
    target: np.ndarray | torch.Tensor,
    views: np.ndarray | torch.Tensor | None = None,
    config: AdaptConfig | None = None,
) -> Head:
    """A new head adapted to the target images, without labels (see the module docstring).

    ``head`` is not changed: the new head has a copy of its model, its classes, threshold and
    store spec, ``stage="adapted"``, the figures of `measure_target` before and after in
    ``metrics["adaptation"]``, and what was done in ``provenance["adaptation"]``.

    Args:
        head: the trained source head.
        target: `(N, d, input_dim)` float16 or float32 mask embeddings of the target images,
            ``N >= MIN_TARGET_IMAGES``.
        views: optional `(N, d, input_dim)` embeddings of the same images under an
            augmentation, mask ``i`` of a view at the same location as mask ``i`` of ``target``
            (for ``consistency``).
        config: the ingredients and their settings; default `AdaptConfig()`.

    Returns:
        The adapted `Head`.

    Raises:
        ConfigError: embeddings whose size is not the head's input size, views of another
            shape than the target, or fewer than ``MIN_TARGET_IMAGES`` images.
    """
    config = config or AdaptConfig()
    x, v = _check_arrays(head, target, views, minimum=MIN_TARGET_IMAGES)
    started = time.perf_counter()
    before = measure_target(head, x, v)
    model = copy.deepcopy(head.model).eval()
    if config.target_statistics:
        model.set_standardization(*_statistics(x, model.input_mean.device))
    plan = _plan(model, x, head.num_classes, config)
    trains = config.pseudo_labels or (config.consistency and v is not None)
    if trains:  # else nothing would move the weights
        with seeded(config.seed, head.device):
            _train(model, x, v, plan, config)
    adapted = head.derived(model, "adapted")
    after = measure_target(adapted, x, v)
    adapted.metrics["adaptation"] = {
        "before": before.as_dict(),
        "after": after.as_dict(),
        "confident_share": float(plan.confident.double().mean()),
        "uncertain_share": float(plan.uncertain.double().mean()),
        "trained": trains,
        "seconds": time.perf_counter() - started,
    }
    adapted.provenance["adaptation"] = {
        "config": config_to_dict(config),
        "num_images": int(x.shape[0]),
        "num_masks": int(x.shape[0] * x.shape[1]),
        "views": v is not None,
        "source_stage": head.stage,
    }
    return adapted


def _check_arrays(
    head: Head,
    target: np.ndarray | torch.Tensor,
    views: np.ndarray | torch.Tensor | None,
    minimum: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    dim = head.model.config.input_dim
    x = torch.as_tensor(target)
    if x.ndim != 3 or x.shape[2] != dim or not x.is_floating_point():
        raise ConfigError(
            f"expected target embeddings of shape (N, d, {dim}) (a bag of d masks per image, "
            f"the head's input size {dim}), got {tuple(x.shape)} {x.dtype}; embed the target "
            "images with the SAM the head was trained on"
        )
    if x.shape[0] < minimum:
        raise ConfigError(
            f"adapting needs at least {minimum} target images, got {x.shape[0]}: add "
            f"{minimum - x.shape[0]} more images"
        )
    v = None if views is None else torch.as_tensor(views)
    if v is not None and (tuple(v.shape) != tuple(x.shape) or not v.is_floating_point()):
        raise ConfigError(
            f"the views' embeddings must have the target's shape {tuple(x.shape)} (mask i of a "
            f"view at the location of the target's mask i), got {tuple(v.shape)} {v.dtype}; "
            "embed each view with the target's prompts mapped into it (embeddings.views)"
        )
    for name, array in (("target", x), ("views'", v)):
        if array is not None and not bool(torch.isfinite(array).all()):
            raise ConfigError(f"the {name} embeddings hold NaN or infinite values: embed again")
    return x, v


@torch.no_grad()
def _logits(model: MaskClassifier, x: torch.Tensor) -> torch.Tensor:
    """`(N, d, K)` float32 logits in eval mode, on the model's device."""
    model.eval()
    device = model.input_mean.device
    return torch.cat([model(chunk.to(device).float()).float() for chunk in x.split(_CHUNK)])


def _probabilities(model: MaskClassifier, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(_logits(model, x), dim=-1).cpu()


@torch.no_grad()
def _statistics(x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std of every target mask, `(D,)` float32 each (float64 sums)."""
    total = torch.zeros(x.shape[-1], dtype=torch.float64, device=device)
    squares = torch.zeros_like(total)
    for chunk in x.split(_CHUNK):
        rows = chunk.to(device).reshape(-1, x.shape[-1]).double()
        total += rows.sum(0)
        squares += (rows * rows).sum(0)
    count = x.shape[0] * x.shape[1]
    mean = total / count
    return mean.float(), (squares / count - mean * mean).clamp_min(0).sqrt().float()


def _plan(model: MaskClassifier, x: torch.Tensor, k: int, config: AdaptConfig) -> _Plan:
    logits = _logits(model, x)
    top, labels = torch.softmax(logits, dim=-1).max(dim=-1)
    confident = top >= default_threshold(k, config.confident_margin)
    uncertain = top < default_threshold(k, config.uncertain_margin)
    if bool(confident.any()):
        prior = torch.softmax(logits[confident], dim=-1).mean(dim=0)
    else:
        prior = torch.full((k,), 1.0 / k, device=logits.device)
    return _Plan(logits, labels, confident, uncertain, prior)


def _train(
    model: MaskClassifier,
    x: torch.Tensor,
    v: torch.Tensor | None,
    plan: _Plan,
    config: AdaptConfig,
) -> None:
    """Adam on the adapted model over shuffled batches of target images (in place)."""
    device = model.input_mean.device
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order = torch.Generator().manual_seed(config.seed)
    use_views = config.consistency and v is not None
    model.train()
    for _ in range(config.epochs):
        for idx in torch.randperm(x.shape[0], generator=order).split(config.batch_size):
            xb = x[idx].to(device).float()
            vb = v[idx].to(device).float() if use_views and v is not None else None
            loss = _batch_loss(model, xb, vb, plan, idx.to(device), config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


def _batch_loss(
    model: MaskClassifier,
    xb: torch.Tensor,
    vb: torch.Tensor | None,
    plan: _Plan,
    idx: torch.Tensor,
    config: AdaptConfig,
) -> torch.Tensor:
    """The weighted sum of the switched-on losses on one batch `(B, d, D)` of target images."""
    logits = model(xb).float()
    loss = logits.sum() * 0.0
    confident, uncertain = plan.confident[idx], plan.uncertain[idx]
    if config.pseudo_labels:
        loss = loss + config.lambda_pseudo * pseudo_label_loss(
            logits[confident], plan.labels[idx][confident]
        )
        loss = loss + config.lambda_uniform * uniform_loss(logits[uncertain])
    if vb is not None:
        loss = loss + config.lambda_consistency * consistency_loss(logits, model(vb).float())
    if config.anchor:
        loss = loss + config.lambda_anchor * anchor_loss(logits, plan.source_logits[idx])
        loss = loss + config.lambda_balance * balance_loss(logits[confident], plan.prior)
    return loss
