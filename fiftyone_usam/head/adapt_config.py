"""`AdaptConfig`: how a head is adapted to target images (`head.adapt`), torch-free so the
command line and the App's forms read its ingredients without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from fiftyone_usam.errors import ConfigError

# the four ingredients of `adapt_head`, each a switch of `AdaptConfig`
INGREDIENTS: tuple[str, ...] = ("target_statistics", "pseudo_labels", "consistency", "anchor")


@dataclass(frozen=True)
class AdaptConfig:
    """How a head is adapted to target images.

    The defaults were chosen on the planted shift of benchmarks/bench_adapt.py (3 seeds, shift
    strengths 0, 0.9 and 1; ``--leave-one-out`` shows each ingredient's share):

    - target statistics and pseudo-labels carry most of the gain; neither is enough alone
      (statistics alone leave the turned objects unsure, pseudo-labels alone learn from a
      standardisation that no longer fits);
    - consistency adds a few points at the strongest shift; alone it collapses (agreeing is
      easiest when every mask says the same), which is what the anchor and pseudo-labels stop;
    - the anchor costs a few points at the strongest shift, but keeps the head
      from sliding to background when pseudo-labels are off or training runs long (80
      epochs), so it stays on with a small weight; the balance prior has weight 0.1 because
      at 1.0 it pulls the few confident masks of a strong shift towards a skewed prior;
    - ``lr=1e-3`` for 10 epochs: ``3e-4`` learnt too little; 20 or 80 epochs did worse at the
      strongest shift (self-training drifts on its own mistakes) and cost more.

    Attributes:
        target_statistics: re-estimate the input standardisation on the target masks.
        pseudo_labels: train confident masks towards their class and unsure ones to uniform.
        consistency: make matching masks of the two views agree (when views are given).
        anchor: keep the adapted head near the source head (reverse KL on every mask) and its
            class balance on confident masks.
        confident_margin: a mask is confident when its top probability (from the source head,
            after the target statistics) is at least ``1/C + margin * (1 - 1/C)``.
        uncertain_margin: a mask is unsure below ``1/C + margin * (1 - 1/C)``; masks in
            between get no pseudo-label and follow the rest.
        lambda_pseudo: weight of the pseudo-label cross-entropy.
        lambda_uniform: weight of the push to uniform on unsure masks.
        lambda_consistency: weight of the symmetric KL between views.
        lambda_anchor: weight of the KL to the source head's distribution.
        lambda_balance: weight of the class-balance prior on confident masks.
        epochs: passes over the target images.
        batch_size: images per step.
        lr: Adam learning rate.
        seed: seeds dropout and the batch order.
    """

    target_statistics: bool = True
    pseudo_labels: bool = True
    consistency: bool = True
    anchor: bool = True
    confident_margin: float = 0.8
    uncertain_margin: float = 0.25
    lambda_pseudo: float = 1.0
    lambda_uniform: float = 1.0
    lambda_consistency: float = 1.0
    lambda_anchor: float = 0.2
    lambda_balance: float = 0.1
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.uncertain_margin <= self.confident_margin < 1.0:
            raise ConfigError(
                "expected 0 <= uncertain_margin <= confident_margin < 1, got "
                f"{self.uncertain_margin} and {self.confident_margin}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        weights = [n for n in vars(self) if n.startswith("lambda_") and getattr(self, n) < 0]
        if weights:
            raise ConfigError(f"loss weights must be at least 0: {', '.join(weights)}")
