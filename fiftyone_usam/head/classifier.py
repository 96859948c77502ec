"""`Head`: a trained head as a driver, from raw mask embeddings to class probabilities and labels.

The tensor module (`MaskClassifier`) knows nothing of class names, numpy, devices or thresholds;
this class does. Label ids follow the ontology's convention: 0 is background, class ``i`` (0-based,
in the head's class order) is ``i + 1``. A mask is background when no class probability reaches
the threshold; the head's uncertainty-distillation training pushes background masks towards the
uniform distribution, which is what makes the threshold work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.head.config import DEFAULT_THRESHOLD_MARGIN, TrainConfig, default_threshold
from fiftyone_usam.head.layout import COMPATIBILITY_FIELDS as COMPATIBILITY_FIELDS
from fiftyone_usam.head.layout import compatibility_fields
from fiftyone_usam.head.model import MaskClassifier
from fiftyone_usam.ontology import BACKGROUND

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.store import StoreSpec

Array = TypeVar("Array", np.ndarray, torch.Tensor)

BACKGROUND_CONVENTION = "threshold"
_CHUNK = 65536  # masks per forward pass in predict_proba


class Head:
    """A trained U-SAM head with its classes, default threshold and provenance.

    Args:
        model: the trained `MaskClassifier` with one output per class.
        classes: class names in output order.
        threshold: default minimum class probability for a mask to get a class (else 0,
            background). Default: ``1/C + 0.5 * (1 - 1/C)``.
        stage: ``teacher`` or ``student``.
        train_config: how it was trained (recorded in checkpoints).
        store_spec: the spec of the embeddings it was trained on; None for arrays of unknown
            origin (then only the embedding size is checked).
        metrics: training figures, e.g. ``{"teacher": {...}, "student": {...}}``.
        provenance: anything else worth keeping (dataset, label field, store path...).
    """

    def __init__(
        self,
        model: MaskClassifier,
        classes: Sequence[str],
        *,
        threshold: float | None = None,
        stage: str = "student",
        train_config: TrainConfig | None = None,
        store_spec: StoreSpec | None = None,
        metrics: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        if model.num_outputs != len(classes):
            raise ConfigError(
                f"the model has {model.num_outputs} outputs for {len(classes)} classes"
            )
        self.model = model.eval()
        self.classes = tuple(classes)
        if threshold is None:
            threshold = default_threshold(len(classes), DEFAULT_THRESHOLD_MARGIN)
        self.threshold = float(threshold)
        self.stage = stage
        self.train_config = train_config
        self.store_spec = store_spec
        self.metrics = dict(metrics or {})
        self.provenance = dict(provenance or {})

    @property
    def num_classes(self) -> int:
        """``C``."""
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return self.model.input_mean.device

    @property
    def mask_targets(self) -> dict[int, str]:
        """Label id -> name, with 0 the background, as FiftyOne's ``mask_targets`` want it."""
        return {0: BACKGROUND, **{k + 1: name for k, name in enumerate(self.classes)}}

    def derived(self, model: MaskClassifier, stage: str) -> Head:
        """A new head of ``model`` (this head's, retrained: adapted, refined) at ``stage``,
        with this head's classes, threshold, configs and store spec, and copies of its
        metrics and provenance (so the new head's additions never reach this one)."""
        return Head(
            model.eval(),
            self.classes,
            threshold=self.threshold,
            stage=stage,
            train_config=self.train_config,
            store_spec=self.store_spec,
            metrics=dict(self.metrics),
            provenance=dict(self.provenance),
        )

    def to(self, device: str | torch.device) -> Head:
        """Moves the model to ``device``; returns self."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def predict_proba(self, embeddings: Array) -> Array:
        """Class probabilities of mask embeddings (softmax over the classes).

        Args:
            embeddings: `(..., 1024)` float numpy array or tensor, e.g. `(M, 1024)`, one row per
                mask.

        Returns:
            `(..., C)` float32, of the input's kind (numpy in, numpy out; a tensor comes back
            on the head's device).
        """
        x = self._as_tensor(embeddings)
        flat = x.reshape(-1, x.shape[-1])
        probs = [
            torch.softmax(self.model(flat[i : i + _CHUNK].to(self.device)).float(), dim=-1)
            for i in range(0, flat.shape[0], _CHUNK)
        ]
        out = (torch.cat(probs) if probs else flat.new_zeros((0, self.num_classes))).reshape(
            *x.shape[:-1], self.num_classes
        )
        return out.cpu().numpy() if isinstance(embeddings, np.ndarray) else out

    def predict(self, embeddings: Array, threshold: float | None = None) -> Array:
        """Label ids of mask embeddings: the best class's id, or 0 where it is below threshold.

        Args:
            embeddings: `(..., 1024)` float numpy array or tensor.
            threshold: minimum class probability; default: the head's ``threshold``.

        Returns:
            `(...,)` int64 label ids: 0 background, ``1..C`` the classes in order.
        """
        return labels_from_proba(self.predict_proba(embeddings), self._threshold(threshold))

    def check_compatible(self, spec: StoreSpec) -> None:
        """Refuses embeddings the head was not trained for.

        Raises:
            StoreError: ``spec`` differs from the training store's in SAM variant, weights,
                encoder input size, embedding size or point grid.
        """
        if self.store_spec is None:
            if spec.embedding_dim != self.model.config.input_dim:
                raise StoreError(
                    f"this head takes {self.model.config.input_dim}-d embeddings; the store "
                    f"holds {spec.embedding_dim}-d ones ({spec.describe()})"
                )
            return
        fields = compatibility_fields(self.store_spec, spec)
        diffs = self.store_spec.differences(spec, fields, ("head", "store"))
        if diffs:
            raise StoreError(
                "this head was trained on embeddings of another kind than the store's ("
                + "; ".join(diffs)
                + f"). The head expects {self.store_spec.describe()}. Embed the images with that "
                "SAM checkpoint and grid (prompts from a label field need only the same SAM), or "
                "train a head on embeddings like the store's"
            )

    def describe(self) -> str:
        """One line for messages."""
        where = f", trained on {self.store_spec.describe()}" if self.store_spec else ""
        return (
            f"U-SAM head ({self.stage}) for {self.num_classes} classes "
            f"({', '.join(self.classes)}), threshold {self.threshold:.3f}{where}"
        )

    def config_dict(self) -> dict[str, Any]:
        """The head and training configs as plain dicts."""
        return {
            "head_config": config_to_dict(self.model.config),
            "train_config": config_to_dict(self.train_config) if self.train_config else None,
        }

    def _as_tensor(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(embeddings)
        if x.ndim < 1 or x.shape[-1] != self.model.config.input_dim:
            raise ConfigError(
                f"expected embeddings of shape (..., {self.model.config.input_dim}), one row per "
                f"mask; got {tuple(x.shape)}"
            )
        return x

    def _threshold(self, threshold: float | None) -> float:
        value = self.threshold if threshold is None else float(threshold)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"threshold must be a probability in [0, 1], got {value}")
        return value


def labels_from_proba(probs: Array, threshold: float) -> Array:
    """Label ids from `(..., C)` class probabilities: argmax + 1, or 0 below ``threshold``.

    Returns:
        `(...,)` int64, of the input's kind.
    """
    if isinstance(probs, np.ndarray):
        best = probs.argmax(axis=-1)
        return np.where(probs.max(axis=-1) >= threshold, best + 1, 0).astype(np.int64)
    confidence, best = probs.max(dim=-1)
    return torch.where(confidence >= threshold, best + 1, torch.zeros_like(best))
