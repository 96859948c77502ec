"""`USAMPredictor`: mask proposals (cached or fresh from SAM) -> instances and a semantic map.

Per image: the head's class probabilities for each point's mask embedding; the candidate masks
chosen by ``granularity`` from each point's three SAM masks; those whose best class passes
``threshold``; mask NMS; then instances and a semantic map where each pixel takes the class of
the most confident kept mask covering it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.inference.postprocess import (
    Instances,
    entropy,
    mask_nms,
    semantic_map,
    threshold_candidates,
)
from fiftyone_usam.ontology import Ontology, load_ontology

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
    from fiftyone_usam.embeddings.proposals import MaskProposals
    from fiftyone_usam.embeddings.store import StoreSpec
    from fiftyone_usam.head.classifier import Head

Granularity = Literal["best", "coarse", "medium", "fine", "all"]
GRANULARITIES: tuple[str, ...] = ("best", "coarse", "medium", "fine", "all")
DEFAULT_NMS_IOU = 0.5


@dataclass(frozen=True)
class PredictorConfig:
    """How proposals become labels.

    Attributes:
        threshold: minimum probability of a mask's best class; below it the mask is background.
            None: the head's own default (stored in its checkpoint).
        nms_iou: masks overlapping a more confident kept mask above this IoU are dropped.
        granularity: which of SAM's three masks per point are candidates: ``best`` (SAM's
            highest predicted IoU), ``coarse`` (the largest), ``medium``, ``fine`` (the
            smallest), or ``all`` three, with NMS deciding.
        class_agnostic_nms: suppress overlaps across classes too (default: only within a class).
    """

    threshold: float | None = None
    nms_iou: float = DEFAULT_NMS_IOU
    granularity: Granularity = "best"
    class_agnostic_nms: bool = False

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"unknown granularity {self.granularity!r}: use one of {', '.join(GRANULARITIES)}"
            )
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ConfigError(f"nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be a probability in [0, 1], got {self.threshold}")


@dataclass(frozen=True, eq=False)
class Prediction:
    """One image's labels.

    Attributes:
        instances: kept masks, most confident first.
        semantic: `(H, W)` label map, 0 = background, ``i`` = ``classes[i - 1]``.
        uncertainty: in [0, 1]: the mean normalised entropy of the kept masks' class
            distributions, or 1.0 when no mask was kept (nothing of the classes was found,
            worth a look).
        image_size: `(H, W)`.
    """

    instances: Instances
    semantic: np.ndarray
    uncertainty: float
    image_size: tuple[int, int]


class USAMPredictor:
    """Applies a trained head to SAM mask proposals.

    Args:
        head: the trained `Head`.
        config: thresholds, NMS and granularity.
        groups: an ontology whose superclasses merge the head's fine classes at prediction time
            (probabilities of a group's classes are summed); None predicts the head's classes.
        extractor: a `MaskEmbeddingExtractor` for `predict_images` (not needed for cached
            proposals).
    """

    needs_image = False
    needs_proposals = True

    def __init__(
        self,
        head: Head,
        config: PredictorConfig | None = None,
        *,
        groups: Ontology | None = None,
        extractor: MaskEmbeddingExtractor | None = None,
    ) -> None:
        self.head = head
        self.config = config or PredictorConfig()
        self.extractor = extractor
        self.threshold = head.threshold if self.config.threshold is None else self.config.threshold
        self._merge, self.classes = _grouping(head.classes, groups)

    def check_store(self, spec: StoreSpec) -> None:
        """Refuses embeddings the head was not trained on (see `Head.check_compatible`)."""
        self.head.check_compatible(spec)

    def predict_images(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Runs SAM then the head on `(H, W, 3)` uint8 RGB images."""
        if self.extractor is None:
            raise ConfigError(
                "this predictor has no SAM: build it as USAMPredictor(head, "
                "extractor=MaskEmbeddingExtractor(load_sam(...))), or label cached proposals "
                "with predict_proposals"
            )
        return [self.predict_proposals(p) for p in self.extractor.extract(images)]

    def predict_proposals(
        self, proposals: MaskProposals | None, image: np.ndarray | None = None
    ) -> Prediction:
        """Labels one image from its mask proposals (the image itself is not needed)."""
        if proposals is None:
            raise ConfigError("U-SAM's predictor labels mask proposals: pass them")
        probs = self.head.predict_proba(proposals.embeddings.astype(np.float32))  # (d, C)
        if self._merge is not None:
            probs = probs @ self._merge  # (d, G)
        flat, point = candidate_masks(proposals, self.config.granularity)
        keep, labels, confidences = threshold_candidates(probs[point], self.threshold)
        rles = [proposals.rle(int(i)) for i in flat[keep]]
        order = mask_nms(
            rles,
            confidences,
            labels,
            self.config.nms_iou,
            class_agnostic=self.config.class_agnostic_nms,
        )
        kept_probs = probs[point[keep[order]]]
        instances = Instances(
            rles=tuple(rles[i] for i in order),
            labels=labels[order],
            confidences=confidences[order],
            entropies=entropy(kept_probs),
            sources=flat[keep[order]].astype(np.int64),
        )
        label_map = semantic_map(
            instances.rles, instances.labels, instances.confidences, proposals.image_size
        )
        return Prediction(
            instances,
            label_map,
            image_uncertainty(instances, len(self.classes)),
            proposals.image_size,
        )

    def describe(self) -> dict[str, Any]:
        """What a run records about the predictor."""
        return {
            "classes": list(self.classes),
            "threshold": self.threshold,
            "nms_iou": self.config.nms_iou,
            "granularity": self.config.granularity,
            "class_agnostic_nms": self.config.class_agnostic_nms,
            "merged_to_superclasses": self._merge is not None,
        }


def build_predictor(
    head: Head, config: PredictorConfig, groups: str | Path | Ontology | None = None
) -> USAMPredictor:
    """A predictor of ``head`` with ``config``, its classes merged into the superclasses of
    ``groups`` (an ontology, its YAML file, or a comma-separated list) when given."""
    return USAMPredictor(head, config, groups=load_ontology(groups) if groups else None)


def candidate_masks(proposals: MaskProposals, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    """Which of each point's three masks are candidates.

    Returns:
        ``(flat, point)``: `(k,)` flat mask indices (``3 * point + j``) and `(k,)` their points.
    """
    d = proposals.num_points
    points = np.arange(d)
    if granularity == "all":
        return np.arange(3 * d, dtype=np.int64), np.repeat(points, 3)
    if granularity == "best":
        choice = proposals.iou_predictions.argmax(axis=1)
    else:
        by_area = np.argsort(proposals.mask_areas(), axis=1, kind="stable")  # small -> large
        choice = by_area[:, {"fine": 0, "medium": 1, "coarse": 2}[granularity]]
    return (3 * points + choice).astype(np.int64), points


def _grouping(
    classes: Sequence[str], groups: Ontology | None
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """A `(C, G)` 0/1 matrix summing fine-class probabilities into superclasses."""
    if groups is None or not groups.superclasses():
        return None, tuple(classes)
    group_of = groups.group_of(classes)
    names = tuple(dict.fromkeys(group_of.values()))
    merge = np.zeros((len(classes), len(names)), dtype=np.float32)
    for i, name in enumerate(classes):
        merge[i, names.index(group_of[name])] = 1.0
    return merge, names


def image_uncertainty(instances: Instances, num_classes: int) -> float:
    if len(instances) == 0:
        return 1.0
    if num_classes < 2:
        return 0.0
    return float(np.mean(instances.entropies) / np.log(num_classes))
