"""Training the head from in-memory arrays: the MIL teacher, then the uncertainty-distilled student.

`fit_head` is the whole recipe on `(N, d, 1024)` embeddings and `(N,)` class indices, usable
without FiftyOne. `fit_teacher` and `fit_student` are its two stages on multi-hot bag targets.
Both stages use the same held-out split of the images, for early stopping and bag accuracy.
Training is deterministic on the CPU for a fixed seed (torch's global RNG is left untouched).
On CUDA the embeddings are copied to the GPU once when they fit (else batches are copied from
host memory) and the forward passes run under bf16 autocast; ``TrainConfig.placement`` and
``TrainConfig.precision`` choose otherwise, and the metrics record what was used
(``data_on_device``, ``mixed_precision``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fiftyone_usam.devices import resolve_device
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.head.classifier import Head
from fiftyone_usam.head.config import TrainConfig, default_threshold
from fiftyone_usam.head.loop import (
    ProgressCallback,
    make_bags,
    predict_bags,
    run_epochs,
    seeded,
    standardize,
)
from fiftyone_usam.head.losses import bad_masks, mil_loss, uncertainty_loss
from fiftyone_usam.head.model import HeadConfig, MaskClassifier
from fiftyone_usam.head.training_set import check_training_arrays


@dataclass
class StageResult:
    """A trained stage: its model (best held-out epoch) and its metrics."""

    model: MaskClassifier
    metrics: dict[str, float] = field(default_factory=dict)


def fit_teacher(
    embeddings: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    config: TrainConfig | None = None,
    head_config: HeadConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Trains a head with the MIL loss alone.

    Args:
        embeddings: `(N, d, input_dim)` float (float16 is fine), one bag of masks per image.
        targets: `(N, K)` multi-hot image labels over the ``K`` outputs.
        config: training settings; default `TrainConfig()`.
        head_config: the head's shape; default `HeadConfig()`.
        progress: called with ``(epochs done, config.epochs)`` after each epoch.

    Returns:
        The teacher (weights of its best held-out epoch) and its metrics.
    """
    config, head_config = config or TrainConfig(), head_config or HeadConfig()
    device = resolve_device(config.device)
    bags = make_bags(embeddings, targets, config, device)
    with seeded(config.seed, device):
        model = MaskClassifier(bags.targets.shape[1], head_config).to(device)
        standardize(model, bags)

        def loss(
            m: MaskClassifier, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
        ) -> torch.Tensor:
            return mil_loss(m(x).float(), y, config.topk_divisor)  # float: losses in fp32

        metrics = run_epochs(model, bags, loss, config, progress, "teacher")
    return StageResult(model, metrics)


def fit_student(
    embeddings: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    teacher: MaskClassifier,
    config: TrainConfig | None = None,
    head_config: HeadConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> StageResult:
    """Trains the student with ``lambda_mil * MIL + lambda_uncertainty * uncertainty``.

    The student starts from fresh weights, or from the teacher's with
    ``config.student_init="teacher"`` (then ``head_config`` must equal the teacher's).

    The frozen teacher's logits are computed once; masks it is unsure about, or sure about with a
    class the image does not have, are pushed towards the uniform distribution.

    Args:
        embeddings: `(N, d, input_dim)` float, as for the teacher.
        targets: `(N, K)` multi-hot image labels.
        teacher: the trained teacher (same ``K`` and input size).
        config: training settings; default `TrainConfig()`.
        head_config: the student's shape; default `HeadConfig()`.
        progress: called with ``(epochs done, config.epochs)`` after each epoch.

    Returns:
        The student (weights of its best held-out epoch) and its metrics, which include the share
        of the training masks the teacher marks bad.
    """
    config, head_config = config or TrainConfig(), head_config or HeadConfig()
    device = resolve_device(config.device)
    bags = make_bags(embeddings, targets, config, device)
    if teacher.num_outputs != bags.targets.shape[1]:
        raise ConfigError(
            f"the teacher has {teacher.num_outputs} outputs but the targets have "
            f"{bags.targets.shape[1]} classes: train the teacher on the same classes"
        )
    everything = torch.arange(len(bags.targets))
    teacher_logits = predict_bags(teacher.to(device), bags, everything, config.batch_size)
    train = bags.train.to(device)
    bad = bad_masks(teacher_logits[train], bags.targets[train], config.entropy_threshold)
    with seeded(config.seed + 1, device):
        model = MaskClassifier(bags.targets.shape[1], head_config).to(device)
        model.set_standardization(teacher.input_mean, teacher.input_std)
        if config.student_init == "teacher":
            if teacher.config != head_config:
                raise ConfigError(
                    f"student_init 'teacher' needs the teacher's shape ({teacher.config}), got "
                    f"{head_config}"
                )
            model.load_state_dict(teacher.state_dict())

        def loss(
            m: MaskClassifier, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
        ) -> torch.Tensor:
            logits = m(x).float()  # the losses in float32, whatever the autocast
            return config.lambda_mil * mil_loss(
                logits, y, config.topk_divisor
            ) + config.lambda_uncertainty * uncertainty_loss(
                logits, teacher_logits[idx], y, config.entropy_threshold
            )

        metrics = run_epochs(model, bags, loss, config, progress, "student")
    metrics["bad_mask_fraction"] = float(bad.float().mean())
    return StageResult(model, metrics)


def fit_head(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | Sequence[int],
    classes: Sequence[str],
    config: TrainConfig | None = None,
    head_config: HeadConfig | None = None,
    *,
    teacher: Head | None = None,
    progress: ProgressCallback | None = None,
) -> Head:
    """Trains U-SAM's head from single-object images, outside FiftyOne.

    Args:
        embeddings: `(N, d, input_dim)` float mask embeddings, one bag per image.
        labels: `(N,)` int, each image's class as an index into ``classes``.
        classes: the class names, in output order (at least two).
        config: training settings (default `TrainConfig()`); ``config.stage`` picks what is
            trained and returned.
        head_config: the head's shape; default `HeadConfig()`.
        teacher: the teacher for ``stage="student"`` (e.g. a loaded teacher checkpoint).
        progress: called with ``(epochs done, epochs in all stages)`` after each epoch.

    Returns:
        The student (``both``, ``student``) or the teacher (``teacher``) as a `Head`, whose
        metrics hold each trained stage's figures under ``teacher`` and ``student``.

    Raises:
        TrainingDataError: arrays of the wrong shape, NaN/inf values, fewer than two classes.
        ConfigError: ``stage="student"`` without a teacher, or a teacher for other classes.
    """
    config, head_config = config or TrainConfig(), head_config or HeadConfig()
    labels = check_training_arrays(embeddings, labels, classes, head_config.input_dim)
    targets = np.eye(len(classes), dtype=np.float32)[labels]
    stages = ["teacher", "student"] if config.stage == "both" else [config.stage]
    if config.stage == "student":
        teacher_model = _usable_teacher(teacher, classes, head_config)
    total = config.epochs * len(stages)
    metrics: dict[str, Any] = {}
    for offset, stage in enumerate(stages):
        report = _offset(progress, offset * config.epochs, total)
        if stage == "teacher":
            result = fit_teacher(embeddings, targets, config, head_config, progress=report)
            teacher_model = result.model
        else:
            result = fit_student(
                embeddings, targets, teacher_model, config, head_config, progress=report
            )
        metrics[stage] = result.metrics
    return Head(
        result.model,
        classes,
        stage=stages[-1],
        train_config=config,
        metrics=metrics,
        threshold=default_threshold(len(classes), config.threshold_margin),
    )


def _offset(progress: ProgressCallback | None, done: int, total: int) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda epoch, _: progress(done + epoch, total)


def _usable_teacher(
    teacher: Head | None, classes: Sequence[str], head_config: HeadConfig
) -> MaskClassifier:
    if teacher is None:
        raise ConfigError(
            "stage 'student' needs a trained teacher: pass teacher=..., or use stage 'both'"
        )
    if tuple(teacher.classes) != tuple(classes):
        raise ConfigError(
            f"the teacher was trained on the classes {list(teacher.classes)}, not {list(classes)}: "
            "retrain the teacher (stage 'teacher' or 'both') for these classes"
        )
    if teacher.model.config.input_dim != head_config.input_dim:
        raise ConfigError(
            f"the teacher takes {teacher.model.config.input_dim}-d embeddings, "
            f"the student {head_config.input_dim}-d"
        )
    return teacher.model
