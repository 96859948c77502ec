"""The two losses of U-SAM's head, as pure functions on tensors.

- `mil_loss`: multiple-instance learning. An image is a bag of ``d`` mask embeddings with an
  image-level label; per class, the bag's score is the mean of its ``k`` highest mask logits,
  and the bag scores are trained with cross-entropy against the image's labels.
- `uncertainty_loss`: distillation from a frozen teacher. Masks the teacher is unsure about
  (high entropy), or sure about but with a class the image does not have, are "bad"; the student
  is pushed towards the uniform distribution on them, so that at inference they fall below the
  confidence threshold and become background.
"""

from __future__ import annotations

import math

import torch


def topk_count(num_masks: int, a: float) -> int:
    """``k = max(1, ceil(d / a))``: how many of a bag's ``d`` masks score each class."""
    if a <= 0:
        raise ValueError(f"the top-k divisor a must be positive, got {a}")
    return max(1, math.ceil(num_masks / a))


def pool_topk(logits: torch.Tensor, a: float) -> torch.Tensor:
    """Bag scores: per image and class, the mean of the ``k`` largest mask logits.

    Args:
        logits: `(B, d, K)` mask logits.
        a: the top-k divisor; ``k = max(1, ceil(d / a))``.

    Returns:
        `(B, K)` bag scores.
    """
    k = topk_count(logits.shape[1], a)
    return logits.topk(k, dim=1).values.mean(dim=1)


def mil_loss(logits: torch.Tensor, labels: torch.Tensor, a: float) -> torch.Tensor:
    """Top-k MIL loss.

    For each image and class, ``s`` is the mean of the ``k`` largest mask logits with
    ``k = max(1, ceil(d / a))``; ``p = softmax(s)`` over classes; the loss is the mean over
    images of the cross-entropy between ``p`` and ``labels / sum(labels)``.

    Args:
        logits: `(B, d, K)` mask logits.
        labels: `(B, K)` multi-hot image labels (at least one positive per image).
        a: the top-k divisor.

    Returns:
        A scalar tensor.
    """
    if logits.ndim != 3 or labels.shape != (logits.shape[0], logits.shape[2]):
        raise ValueError(
            f"expected logits (B, d, K) and labels (B, K), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    labels = labels.to(logits.dtype)
    counts = labels.sum(dim=1, keepdim=True)
    if bool((counts <= 0).any()):
        raise ValueError("every image needs at least one positive label")
    log_p = torch.log_softmax(pool_topk(logits, a), dim=1)
    return -((labels / counts) * log_p).sum(dim=1).mean()


def bad_masks(
    teacher_logits: torch.Tensor, labels: torch.Tensor, entropy_threshold: float
) -> torch.Tensor:
    """The masks the student should be unsure about.

    A mask is bad if the entropy ``H = -sum p log p`` of the teacher's ``p = softmax(logits)``
    exceeds ``entropy_threshold``, or if ``H <= entropy_threshold`` and the teacher's most
    likely class is not among the image's labels.

    Args:
        teacher_logits: `(B, d, K)` teacher mask logits.
        labels: `(B, K)` multi-hot image labels.
        entropy_threshold: in nats (the uniform distribution over ``K`` classes has ``log K``).

    Returns:
        `(B, d)` bool.
    """
    log_p = torch.log_softmax(teacher_logits, dim=2)
    entropy = -(log_p.exp() * log_p).sum(dim=2)
    best = teacher_logits.argmax(dim=2, keepdim=True)
    labelled = torch.gather(labels, 1, best.squeeze(2)) > 0
    return (entropy > entropy_threshold) | ~labelled


def uncertainty_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    entropy_threshold: float,
) -> torch.Tensor:
    """Pushes the student towards uniform on the teacher's bad masks (see `bad_masks`).

    The loss is the mean over all bad masks of the batch of ``sum over classes of
    -log softmax(student logits)``, and 0 when no mask is bad. Its minimum, ``K log K`` per bad
    mask, is reached at the uniform distribution.

    Args:
        student_logits: `(B, d, K)` student mask logits.
        teacher_logits: `(B, d, K)` teacher mask logits (no gradient flows into them).
        labels: `(B, K)` multi-hot image labels.
        entropy_threshold: in nats.

    Returns:
        A scalar tensor.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}"
        )
    bad = bad_masks(teacher_logits.detach(), labels, entropy_threshold)
    if not bool(bad.any()):
        return student_logits.sum() * 0.0  # keeps the graph, so backward() still works
    per_mask = -torch.log_softmax(student_logits, dim=2).sum(dim=2)
    return per_mask[bad].mean()
