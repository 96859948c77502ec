"""Refining a head from a reviewer's corrections of its instances, in seconds, on arrays.

A reviewer looks at the instances a head labelled and tags some: ``ok`` (confirmed), ``wrong``
(not the class the head gave it: background, or a class the reviewer does not name) or
``relabel`` (another class). `refine_head` fine-tunes a copy of the head on those masks:

- confirmed and relabelled masks: cross-entropy towards their class (`pseudo_label_loss`);
- masks tagged wrong: towards the uniform distribution (`uniform_loss`, the student's
  uncertainty loss), so they fall below the threshold and become background;
- anchor: on a replay sample of the dataset's other masks the refined head stays near the
  previous one (`anchor_loss`), so what nobody corrected is not forgotten; a small L2 pull to
  the previous weights as well.

The corrections' loss is their weighted mean, not a sum beside the replay's: ten corrections
pull as hard against the anchor as two hundred, and a change (``wrong``, ``relabel``) weighs
``RefineConfig.change_weight`` confirmations. On the CPU it is deterministic for a seed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.adapt_losses import anchor_loss, pseudo_label_loss, uniform_loss
from fiftyone_usam.head.classifier import Head, labels_from_proba
from fiftyone_usam.head.loop import seeded
from fiftyone_usam.head.model import MaskClassifier

# what a reviewer can say about an instance; fiftyone_io.corrections.KINDS is the same tuple
CORRECTION_KINDS: tuple[str, ...] = ("ok", "wrong", "relabel")
WRONG_TARGET = -1  # the target of a mask tagged wrong: no class, train towards uniform
_CHUNK = 4096  # masks per no-grad forward pass, and the replay masks the figures use
_TRUNK = 2  # model.mlp[:2], the first Linear and its ReLU: frozen without tune_first_layer


@dataclass(frozen=True, eq=False)
class Corrections:
    """A reviewer's corrections: one row per corrected instance's mask.

    Attributes:
        embeddings: `(M, D)` float16 or float32 mask embeddings, one row per instance.
        targets: `(M,)` int64: the class index ``0..C-1`` of a confirmed (``ok``) or relabelled
            (``relabel``) mask, ``-1`` (`WRONG_TARGET`) for a mask tagged ``wrong``.
        kinds: M strings of `CORRECTION_KINDS`.

    Raises:
        ConfigError: lengths that differ, an unknown kind, or a target unfit for its kind.
    """

    embeddings: np.ndarray | torch.Tensor
    targets: np.ndarray
    kinds: tuple[str, ...]

    def __post_init__(self) -> None:
        targets = np.asarray(self.targets)
        if targets.ndim != 1 or (targets.size and not np.issubdtype(targets.dtype, np.integer)):
            raise ConfigError(f"targets must be (M,) integers, got {targets.shape} {targets.dtype}")
        object.__setattr__(self, "targets", targets.astype(np.int64))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if len(self.kinds) != len(targets):
            raise ConfigError(
                f"{len(targets)} targets but {len(self.kinds)} kinds: give one kind per target"
            )
        unknown = sorted(set(self.kinds) - set(CORRECTION_KINDS))
        if unknown:
            raise ConfigError(f"unknown correction kind(s) {unknown}; valid: {CORRECTION_KINDS}")
        wrong = np.array([k == "wrong" for k in self.kinds], dtype=bool)
        if np.any(self.targets[wrong] != WRONG_TARGET):
            raise ConfigError(
                "a mask tagged wrong must have target -1 (no class: it is trained towards "
                "background); give a relabelled mask the kind 'relabel' and its class index"
            )
        if np.any(self.targets[~wrong] < 0):
            raise ConfigError(
                "an 'ok' or 'relabel' correction needs a class index 0..C-1 as its target; "
                "target -1 is for masks tagged wrong"
            )

    def __len__(self) -> int:
        return len(self.kinds)

    def counts(self) -> dict[str, int]:
        """Kind -> number of corrections, every kind of `CORRECTION_KINDS` present."""
        return {kind: self.kinds.count(kind) for kind in CORRECTION_KINDS}

    def per_class(
        self, classes: Sequence[str], given: np.ndarray | None = None
    ) -> dict[str, dict[str, int]]:
        """Class name -> kind -> number of corrections.

        ``ok`` and ``relabel`` count under their target class; ``wrong`` under the class the
        head gave the mask, taken from ``given`` (`(M,)` class indices), and not at all without.
        """
        out = {name: dict.fromkeys(CORRECTION_KINDS, 0) for name in classes}
        gave = self.targets if given is None else np.asarray(given)
        for kind, target, head_class in zip(self.kinds, self.targets, gave, strict=True):
            index = int(head_class if kind == "wrong" else target)
            if index >= 0:
                out[classes[index]][kind] += 1
        return out


@dataclass(frozen=True)
class RefineConfig:
    """How a head learns from corrections.

    The defaults were chosen on the planted reviewer of benchmarks/bench_refine.py (3 seeds,
    shifts s = 0.6, 0.9 and 1, K = 10, 50, 200 corrections a round, 3 rounds):

    - ``lambda_anchor=0.1``: a shifted head's mistakes are systematic, and an anchor of 0.3
      to 1 holds the uncorrected ones back (background accuracy 0.86-0.99 after 3 rounds
      instead of 1.0); 0.1 still costs nothing where the head was right;
    - ``change_weight=1``: 2 and 4 cost object accuracy (the push to uniform spills over onto
      objects; confirmations hold them); it is there for reviewers who mostly confirm;
    - 40 epochs at ``lr=1e-3``: 20 were worse after three rounds, 60 and 80 lost background
      accuracy at s = 1, ``lr=2e-3`` and ``3e-3`` lost objects;
    - the first layer trains: frozen, it did as well on the benchmark in half the time, but
      parts tagged wrong took the held-out objects to background with them (tests/unit/
      test_refine.py): its features do not tell a part from its object;
    - ``lambda_weights=1e-3``: hardly matters; it steadies a run without a replay.

    Attributes:
        epochs: passes over the corrections; each pass is ``ceil(M / batch_size)`` steps.
        lr: Adam learning rate.
        batch_size: corrections per step.
        replay_batch_size: replay masks per step (drawn at random, with replacement).
        lambda_anchor: weight of the KL to the previous head on the replay masks, against the
            corrections' weighted mean loss (weight 1).
        lambda_weights: weight of the summed squared distance to the previous head's weights.
        change_weight: weight of a ``wrong`` or ``relabel`` correction in the corrections'
            mean, an ``ok`` weighing 1: a few changes among many confirmations still count.
        tune_first_layer: train the first layer too. Off, its outputs are computed once and
            only the rest of the MLP trains: about twice as fast, but it cannot learn a
            distinction those outputs do not make.
        seed: seeds dropout, the batch order and the replay draws.
    """

    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 256
    replay_batch_size: int = 256
    lambda_anchor: float = 0.1
    lambda_weights: float = 1e-3
    change_weight: float = 1.0
    tune_first_layer: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        rules = (
            ("at least 1", ("epochs", "batch_size", "replay_batch_size"), lambda v: v >= 1),
            ("positive", ("lr", "change_weight"), lambda v: v > 0),
            ("at least 0", ("lambda_anchor", "lambda_weights"), lambda v: v >= 0),
        )
        for rule, names, holds in rules:
            for name in names:
                if not holds(getattr(self, name)):
                    raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)}")


def refine_head(
    head: Head,
    corrections: Corrections,
    replay: np.ndarray | torch.Tensor | None = None,
    config: RefineConfig | None = None,
) -> Head:
    """A new head fine-tuned on a reviewer's corrections (see the module docstring).

    ``head`` is not changed: the new head has a copy of its model, its classes, threshold,
    store spec and training config, ``stage="refined"``, what was done in
    ``provenance["refinement"]`` and the figures (seconds, losses, the share of corrections
    followed, of replay labels kept) in ``metrics["refinement"]``.

    Args:
        head: the head the reviewer corrected.
        corrections: the reviewer's corrections, `(M, input_dim)` embeddings.
        replay: optional `(R, input_dim)` float16 or float32 embeddings of other masks of the
            dataset (a random sample of the store's masks), on which the refined head is kept
            near ``head``. None: the corrections themselves serve.
        config: the settings; default `RefineConfig()`.

    Returns:
        The refined `Head`.

    Raises:
        ConfigError: no corrections, embeddings of another size than the head's input, targets
            outside ``0..C-1`` (or -1 for wrong), or NaN / infinite embeddings.
    """
    config = config or RefineConfig()
    started = time.perf_counter()
    x, targets, r = _check(head, corrections, replay)
    model = copy.deepcopy(head.model).eval()
    changed = torch.tensor([k != "ok" for k in corrections.kinds], device=head.device)
    problem = _problem(model, x, targets, changed, x if r is None else r, config)
    given = _net_logits(problem.net, problem.x).argmax(-1)  # the class the head gave each mask
    before = _figures(problem, head.threshold, config, replay=False)
    with seeded(config.seed, head.device):
        steps = _train(problem, config)
    after = _figures(problem, head.threshold, config, replay=r is not None)
    refined = head.derived(model, "refined")
    refined.metrics["refinement"] = {
        "before": before,
        "after": after,
        "steps": steps,
        "seconds": time.perf_counter() - started,
    }
    refined.provenance["refinement"] = {
        "corrections": corrections.counts(),
        "per_class": corrections.per_class(head.classes, given.cpu().numpy()),
        "replay": 0 if r is None else len(r),
        "config": config_to_dict(config),
        "source_stage": head.stage,
    }
    return refined


def _check(
    head: Head, corrections: Corrections, replay: np.ndarray | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The corrections' `(M, D)` float32 embeddings and `(M,)` targets on the head's device, and
    the replay as given (checked)."""
    if not len(corrections):
        raise ConfigError(
            "there are no corrections to learn from: tag instances usam:wrong / usam:ok or edit "
            "their labels in the App first"
        )
    dim, k = head.model.config.input_dim, head.num_classes
    x = torch.as_tensor(corrections.embeddings)
    if x.ndim != 2 or x.shape != (len(corrections), dim) or not x.is_floating_point():
        raise ConfigError(
            f"expected the corrections' embeddings as ({len(corrections)}, {dim}) floats (one "
            f"row per corrected instance, the head's input size {dim}), got {tuple(x.shape)} "
            f"{x.dtype}; read them from the store the head labelled"
        )
    if int(corrections.targets.max()) >= k:
        raise ConfigError(
            f"correction targets must be class indices 0..{k - 1} of the head's classes "
            f"({', '.join(head.classes)}) or -1 for wrong, got {int(corrections.targets.max())}: "
            "a relabel to a class the head does not know needs a head trained with that class"
        )
    r = None if replay is None or not len(replay) else torch.as_tensor(replay)
    if r is not None and (r.ndim != 2 or r.shape[1] != dim or not r.is_floating_point()):
        raise ConfigError(
            f"expected replay embeddings of shape (R, {dim}) (other masks of the dataset), got "
            f"{tuple(r.shape)} {r.dtype}; pass a sample of the store's masks, or None"
        )
    for name, array in (("corrections'", x), ("replay", r)):
        if array is not None and not bool(torch.isfinite(array).all()):
            raise ConfigError(f"the {name} embeddings hold NaN or infinite values: embed again")
    targets = torch.from_numpy(corrections.targets).to(head.device)
    return x.to(head.device).float(), targets, r


@dataclass
class _Problem:
    """The refinement as the optimiser sees it, on the head's device."""

    net: nn.Module  # what trains: the MLP after its first layer, or the whole model
    start: list[torch.Tensor]  # net's parameters before training (the L2 anchor)
    x: torch.Tensor  # (M, F) the corrections as net's inputs
    targets: torch.Tensor  # (M,) int64, -1 wrong
    changed: torch.Tensor  # (M,) bool: wrong or relabel
    anchor: torch.Tensor  # (R, F) the replay masks (or the corrections) as net's inputs
    anchor_logits: torch.Tensor  # (R, C) float32: the previous head's


def _problem(
    model: MaskClassifier,
    x: torch.Tensor,
    targets: torch.Tensor,
    changed: torch.Tensor,
    anchor: torch.Tensor,
    config: RefineConfig,
) -> _Problem:
    """The net to train and its inputs: with the first layer frozen, its outputs, computed once
    in the same pass as the previous head's logits (the first layer costs most of a step)."""
    if config.tune_first_layer:
        net: nn.Module = model
        anchor = anchor.to(x.device)
        logits = _net_logits(model, anchor)
    else:  # the optimiser gets only the layers after the trunk: the trunk stays as it is
        net = model.mlp[_TRUNK:]
        own = _features(model, x)[0]
        anchor, logits = (own, _net_logits(net, own)) if anchor is x else _features(model, anchor)
        x = own
    start = [q.detach().clone() for q in net.parameters()]
    return _Problem(net, start, x, targets, changed, anchor, logits)


@torch.no_grad()
def _features(model: MaskClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(N, H)` first-layer outputs and `(N, C)` logits, float32, eval mode, chunk by chunk."""
    trunk = model.mlp[_TRUNK - 1]
    assert isinstance(trunk, nn.ReLU), "model.py's MLP is Linear, ReLU, Dropout, ..."
    model.eval()
    device, features, logits = model.input_mean.device, [], []
    # on the private copy being refined: an error leaves no hook on the caller's head
    handle = trunk.register_forward_hook(lambda _m, _i, out: features.append(out.float()))
    for chunk in x.split(_CHUNK):
        logits.append(model(chunk.to(device).float()).float())
    handle.remove()
    return torch.cat(features), torch.cat(logits)


@torch.no_grad()
def _net_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(N, C)` float32 logits of ``net`` in eval mode, chunk by chunk."""
    net.eval()
    return torch.cat([net(chunk.float()).float() for chunk in x.split(_CHUNK)])


def corrections_loss(
    logits: torch.Tensor, targets: torch.Tensor, changed: torch.Tensor, change_weight: float
) -> torch.Tensor:
    """The weighted mean loss of corrected masks: cross-entropy towards a class, uniform for -1.

    Args:
        logits: `(M, C)` logits of the corrected masks.
        targets: `(M,)` int64 class index, or -1 (`WRONG_TARGET`) for a mask tagged wrong.
        changed: `(M,)` bool, the ``wrong`` and ``relabel`` ones: they weigh ``change_weight``,
            a confirmation 1.

    Returns:
        A scalar tensor, 0 for ``M = 0``.
    """
    wrong = targets == WRONG_TARGET
    total = uniform_loss(logits[wrong]) * change_weight * int(wrong.sum())
    weight = change_weight * int(wrong.sum())
    for rows, w in ((~changed & ~wrong, 1.0), (changed & ~wrong, change_weight)):  # ok, relabel
        n = int(rows.sum())
        total = total + pseudo_label_loss(logits[rows], targets[rows]) * w * n
        weight += w * n
    return total / max(weight, 1e-12)


def _train(problem: _Problem, config: RefineConfig) -> int:
    """Adam on ``problem.net`` (in place); returns the number of steps taken."""
    p = problem
    optimizer = torch.optim.Adam(p.net.parameters(), lr=config.lr)
    order = torch.Generator().manual_seed(config.seed)
    steps = 0
    p.net.train()
    for _ in range(config.epochs):
        for idx in torch.randperm(len(p.x), generator=order).split(config.batch_size):
            draw = torch.randint(len(p.anchor), (config.replay_batch_size,), generator=order)
            idx, draw = idx.to(p.x.device), draw.to(p.x.device)
            logits = p.net(torch.cat([p.x[idx], p.anchor[draw].float()])).float()
            ours, theirs = logits[: len(idx)], logits[len(idx) :]
            loss = corrections_loss(ours, p.targets[idx], p.changed[idx], config.change_weight)
            loss = loss + config.lambda_anchor * anchor_loss(theirs, p.anchor_logits[draw])
            if config.lambda_weights:  # the summed squared distance to the starting weights
                pairs = zip(p.net.parameters(), p.start, strict=True)
                distance = torch.stack([((q - q0) ** 2).sum() for q, q0 in pairs]).sum()
                loss = loss + config.lambda_weights * distance
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    p.net.eval()
    return steps


@torch.no_grad()
def _figures(
    problem: _Problem, threshold: float, config: RefineConfig, *, replay: bool
) -> dict[str, float]:
    """How far the net follows the corrections, and (``replay``) keeps the previous head's
    labels and distributions on the anchor masks."""
    p = problem
    logits = _net_logits(p.net, p.x)
    followed = labels_from_proba(torch.softmax(logits, -1), threshold) == p.targets + 1
    loss = corrections_loss(logits, p.targets, p.changed, config.change_weight)
    changes = followed[p.changed].double().mean() if p.changed.any() else math.nan
    out = {"corrections_loss": float(loss), "followed": float(followed.double().mean())}
    out["changes_followed"] = float(changes)
    if replay:  # on the first _CHUNK anchor masks: the replay is a random sample already
        now, then = _net_logits(p.net, p.anchor[:_CHUNK]), p.anchor_logits[:_CHUNK]
        kept = labels_from_proba(torch.softmax(now, -1), threshold) == labels_from_proba(
            torch.softmax(then, -1), threshold
        )
        out["anchor_loss"] = float(anchor_loss(now, then))
        out["replay_kept"] = float(kept.double().mean())
    return out
