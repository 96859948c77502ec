"""How the head is trained (`TrainConfig`) and its default confidence threshold.

Kept apart from the loop and the driver so that the training loop (`loop`, `train`), the driver
(`classifier`) and the checkpoint format (`checkpoint`) all import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from fiftyone_usam.errors import ConfigError

DEFAULT_THRESHOLD_MARGIN = 0.5  # TrainConfig.threshold_margin's default; see default_threshold
STAGES = ("teacher", "student", "both")
STUDENT_INITS = ("random", "teacher")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
PLACEMENTS = ("auto", "device", "host")

Stage = Literal["teacher", "student", "both"]
TrainPrecision = Literal["auto", "fp32", "bf16"]
Placement = Literal["auto", "device", "host"]


@dataclass(frozen=True)
class TrainConfig:
    """How the head is trained.

    Attributes:
        stage: ``teacher`` (MIL only), ``student`` (distilled from a given teacher), or
            ``both`` (teacher, then student); `fit_head` returns the last one trained.
        epochs: at most this many passes over the training images per stage.
        batch_size: images per optimisation step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        topk_divisor: ``a`` in ``k = max(1, ceil(d / a))``, the masks that score a class.
        entropy_threshold: teacher entropy (nats) above which a mask is "bad" for the student.
        lambda_mil: weight of the MIL loss in the student's objective.
        lambda_uncertainty: weight of the uncertainty loss in the student's objective.
        val_fraction: share of the images held out (per class) for early stopping and metrics.
        patience: stop a stage after this many epochs without a better held-out loss.
        threshold_margin: the head's default confidence threshold is
            ``1/C + threshold_margin * (1 - 1/C)``: 0 is the uniform distribution, 1 certainty.
        student_init: ``random`` (fresh weights) or ``teacher`` (start from the teacher's).
            Fresh weights were more reliable on planted data (benchmarks/bench_head.py): a
            teacher that calls the background one of the classes passes that confusion on.
        seed: seeds the split, the initialisation, the batch order and dropout.
        device: ``cpu``, ``cuda``, ``cuda:N``; None: CUDA when available.
        precision: ``auto`` (bf16 autocast on CUDA, float32 on the CPU), ``fp32`` (no
            autocast: the switch that turns mixed precision off) or ``bf16`` (autocast on any
            device; slow on most CPUs). The weights and the optimiser stay float32.
        placement: where the training embeddings live. ``auto``: copied once to the training
            device when they fit in its free memory with room to spare (checked on CUDA; the
            CPU is host memory already), else kept in host memory; ``device``: always copied
            once; ``host``: kept in host memory, each batch gathered into a pinned buffer and
            copied to the device without blocking. Where the data lives never changes the
            weights learnt.
    """

    stage: Stage = "both"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    topk_divisor: float = 8.0
    entropy_threshold: float = 0.5
    lambda_mil: float = 1.0
    lambda_uncertainty: float = 0.15
    val_fraction: float = 0.2
    patience: int = 10
    threshold_margin: float = DEFAULT_THRESHOLD_MARGIN
    student_init: Literal["teacher", "random"] = "random"
    seed: int = 0
    device: str | None = None
    precision: TrainPrecision = "auto"
    placement: Placement = "auto"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be teacher, student or both, got {self.stage!r}")
        if self.student_init not in STUDENT_INITS:
            raise ConfigError(f"student_init must be random or teacher, got {self.student_init!r}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(
                f"precision must be auto, fp32 or bf16 for training, got {self.precision!r} "
                "(fp16 would need loss scaling: use bf16)"
            )
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be auto, device or host, got {self.placement!r}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "topk_divisor"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.threshold_margin < 1.0:
            raise ConfigError(f"threshold_margin must be in [0, 1), got {self.threshold_margin}")


def with_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """``config`` with the settings in ``overrides`` that are not None replaced."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def default_threshold(num_classes: int, margin: float) -> float:
    """``1/C + margin * (1 - 1/C)``: 0 is the uniform distribution over ``C`` classes, 1 certainty.

    Scaling with ``C`` keeps one margin meaningful for 2 classes and for 80: the student
    pushes background masks towards ``1/C``, and object masks towards 1.
    """
    return 1.0 / num_classes + margin * (1.0 - 1.0 / num_classes)
