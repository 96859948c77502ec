"""The losses of label-free adaptation (`fiftyone_usam.head.adapt`), as pure functions on tensors.

- `pseudo_label_loss`: cross-entropy towards the class the frozen source head is confident of;
- `uniform_loss`: the uncertainty loss of U-SAM's student (`head.losses.uncertainty_loss`), on
  the masks the source head is unsure about, so they stay background;
- `consistency_loss`: matching masks of two views of an image get agreeing class distributions;
- `anchor_loss`: the adapted head's distribution stays near the frozen source head's (reverse
  KL);
- `balance_loss`: the mean class distribution on confident masks stays the source's prior, so
  the adapted head does not drift to one class.

Every loss is a mean over the masks it is given and 0 (with a graph) when it is given none.
"""

from __future__ import annotations

import math

import torch


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """`(...,)` ``KL(p || q) = sum_k p_k (log p_k - log q_k)`` of log-distributions `(..., K)`."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _mean(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.mean() if values.numel() else like.sum() * 0.0  # keeps backward() working


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Symmetric KL between the class distributions of matching masks of two views.

    ``0.5 * (KL(p_a || p_b) + KL(p_b || p_a))`` per mask, with ``p = softmax(logits)``, averaged
    over the masks; gradients flow into both views. 0 when the distributions agree.

    Args:
        logits_a: `(..., K)` logits of the masks of one view, e.g. `(B, d, K)`.
        logits_b: the same shape: mask ``i`` of the other view (the same image location).

    Returns:
        A scalar tensor.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            f"the two views' logits differ in shape: {tuple(logits_a.shape)} vs "
            f"{tuple(logits_b.shape)}"
        )
    log_a = torch.log_softmax(logits_a, dim=-1)
    log_b = torch.log_softmax(logits_b, dim=-1)
    return _mean(0.5 * (_kl(log_a, log_b) + _kl(log_b, log_a)), logits_a)


def pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of masks towards their pseudo-labels.

    Args:
        logits: `(M, K)` logits of the confident masks.
        labels: `(M,)` int64 class index each mask is trained towards.

    Returns:
        A scalar tensor, 0 for ``M = 0``.
    """
    if not len(labels):
        return logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(logits, labels)


def uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Pushes masks towards the uniform distribution: ``KL(uniform || softmax(logits))``.

    Per mask this is ``-mean_k log p_k - log K``, the student's uncertainty loss divided by
    ``K`` and shifted so that its minimum, at the uniform distribution, is 0.

    Args:
        logits: `(M, K)` logits of the uncertain masks.

    Returns:
        A scalar tensor, 0 for ``M = 0``.
    """
    per_mask = -torch.log_softmax(logits, dim=-1).mean(dim=-1) - math.log(logits.shape[-1])
    return _mean(per_mask, logits)


def anchor_loss(logits: torch.Tensor, source_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p || p_source)``: the adapted head's distribution stays near the source head's.

    The reverse KL (the adapted distribution first) lets a mask grow sharper on a class the
    source gives weight to, which self-training needs, while it costs much to move weight to a
    class the source rules out or to flatten a mask the source is sure about (no collapse to
    one class or to background). ``KL(p_source || p)`` would fight every sharpening.

    Args:
        logits: `(..., K)` the adapted head's logits.
        source_logits: the frozen source head's logits of the same masks (no gradient).

    Returns:
        A scalar tensor.
    """
    log_source = torch.log_softmax(source_logits.detach(), dim=-1)
    return _mean(_kl(torch.log_softmax(logits, dim=-1), log_source), logits)


def balance_loss(logits: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``KL(prior || mean_m softmax(logits_m))``: the class balance of a set of masks.

    Args:
        logits: `(M, K)` logits of the confident masks of a batch.
        prior: `(K,)` the class distribution they should keep on average (sums to 1).

    Returns:
        A scalar tensor, 0 for ``M = 0``.
    """
    if not len(logits):
        return logits.sum() * 0.0
    mean = torch.softmax(logits, dim=-1).mean(dim=0).clamp_min(1e-12)
    prior = prior.clamp_min(1e-12)
    return (prior * (prior.log() - mean.log())).sum()
