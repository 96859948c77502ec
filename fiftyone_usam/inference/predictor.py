"""`USAMPredictor`: mask proposals (cached or fresh from SAM) -> instances and a semantic map.

Per image: the head's class probabilities for each point's mask embedding; the candidate masks
chosen by ``granularity`` from each point's three SAM masks; those whose best class passes
``threshold``; mask NMS; then instances and a semantic map where each pixel takes the class of
the most confident kept mask covering it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fiftyone_usam.devices import cpu_threads
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.inference.postprocess import (
    Instances,
    decode_instances,
    entropy,
    mask_nms,
    paint_instances,
    threshold_candidates,
)
from fiftyone_usam.inference.prompted import PromptLabels, prompt_instances
from fiftyone_usam.ontology import Ontology, load_ontology

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
    from fiftyone_usam.embeddings.proposals import MaskProposals
    from fiftyone_usam.embeddings.store import StoreSpec
    from fiftyone_usam.head.classifier import Head

Granularity = Literal["best", "coarse", "medium", "fine", "all"]
GRANULARITIES: tuple[str, ...] = ("best", "coarse", "medium", "fine", "all")
DEFAULT_NMS_IOU = 0.5
DEFAULT_HEAD_THREADS = 1


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
        painted: `(H, W)` label map, or None to paint it from the instances when first asked
            for (`semantic`): the writer thread of `label_view` does it, not the labeller.
        uncertainty: in [0, 1]: the mean normalised entropy of the kept masks' class
            distributions, or 1.0 when no mask was kept (nothing of the classes was found,
            worth a look).
        image_size: `(H, W)`.
        prompts_fingerprint: for a label field's prompts, the fingerprint of those labelled
            (written on the instances, so a later run sees which samples' prompts changed).
    """

    instances: Instances
    painted: np.ndarray | None
    uncertainty: float
    image_size: tuple[int, int]
    prompts_fingerprint: str | None = None

    @cached_property
    def semantic(self) -> np.ndarray:
        """`(H, W)` label map, 0 = background, ``i`` = ``classes[i - 1]``; where kept masks
        overlap, the more confident one's label (`paint_instances`)."""
        if self.painted is not None:
            return self.painted
        return paint_instances(self.instances, self.image_size)


class USAMPredictor:
    """Applies a trained head to SAM mask proposals.

    Args:
        head: the trained `Head`.
        config: thresholds, NMS and granularity.
        groups: an ontology whose superclasses merge the head's fine classes at prediction time
            (probabilities of a group's classes are summed); None predicts the head's classes.
        extractor: a `MaskEmbeddingExtractor` for `predict_images` (not needed for cached
            proposals).
        threads: torch intra-op threads of the head's forward pass on the CPU (None: torch's
            own setting). One by default: a batch's pass is small, and while it runs the
            other core writes the previous batch.
        prompts: for proposals of a label field's prompts: their own labels, and whether to
            keep them (`inference.prompted`); such proposals give one instance per prompt.
            With ``keep``, the prompts' labels that are not the head's classes are added to
            `classes` (after them).
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
        threads: int | None = DEFAULT_HEAD_THREADS,
        prompts: PromptLabels | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        if prompts is not None and (config or PredictorConfig()).granularity == "all":
            raise ConfigError(
                "granularity 'all' keeps three masks per point; a prompt gives one instance: "
                "use best, coarse, medium or fine with a prompt field"
            )
        self.head = head
        self.threads = threads
        self.config = config or PredictorConfig()
        self.extractor = extractor
        self.threshold = head.threshold if self.config.threshold is None else self.config.threshold
        self._merge, self.predicted = _grouping(head.classes, groups)
        self.prompts = prompts or PromptLabels()
        # the classes written: those the head predicts, then prompt labels kept beside them
        self.classes = self.predicted + self.prompts.extra_classes(self.predicted)

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
        return self.predict_batch([proposals])[0]

    def predict_batch(
        self,
        proposals: Sequence[MaskProposals | None],
        images: Sequence[np.ndarray | None] | None = None,
    ) -> list[Prediction]:
        """Labels many images, with one head forward pass over all their mask embeddings and
        one decode of all their kept masks (`decode_instances`).

        Args:
            proposals: each image's proposals (``d`` embeddings each; grids may differ).
            images: not needed (accepted for the `ProposalLabeler` protocol).

        Returns:
            One `Prediction` per image, equal to `predict_proposals` of each.
        """
        if any(p is None for p in proposals):
            raise ConfigError("U-SAM's predictor labels mask proposals: pass them")
        given = [p for p in proposals if p is not None]
        if not given:
            return []
        # (sum d, D) as stored (float16): the head casts to float32 itself, faster than numpy
        rows = np.concatenate([p.embeddings for p in given])
        with cpu_threads(self.threads if self._on_cpu() else None):
            probs = self.head.predict_proba(rows)  # (sum d, C)
        if self._merge is not None:
            probs = probs @ self._merge  # (sum d, G)
        bounds = np.cumsum([0, *(p.num_points for p in given)])
        out = [self._label(p, probs[bounds[i] : bounds[i + 1]]) for i, p in enumerate(given)]
        decode_instances([prediction.instances for prediction in out])
        return out

    def _on_cpu(self) -> bool:
        device = getattr(self.head, "device", None)
        return device is None or getattr(device, "type", "cpu") == "cpu"

    def _label(self, proposals: MaskProposals, probs: np.ndarray) -> Prediction:
        """Candidates, threshold, NMS and the semantic map from `(d, C)` class probabilities."""
        flat, point = candidate_masks(proposals, self.config.granularity)
        if proposals.prompt_ids:  # a user's prompts: one instance each, kept whatever the head says
            instances = prompt_instances(
                proposals, probs, flat, self.threshold, self.classes, self.prompts
            )
            uncertainty = image_uncertainty(instances, probs.shape[1])
            return Prediction(
                instances, None, uncertainty, proposals.image_size, proposals.prompt_fingerprint
            )
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
        return Prediction(
            instances,
            None,  # painted when the writer asks (`Prediction.semantic`)
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
            "keep_prompt_labels": self.prompts.keep,
        }


def build_predictor(
    head: Head,
    config: PredictorConfig,
    groups: str | Path | Ontology | None = None,
    threads: int | None = DEFAULT_HEAD_THREADS,
    prompts: PromptLabels | None = None,
) -> USAMPredictor:
    """A predictor of ``head`` with ``config``, its classes merged into the superclasses of
    ``groups`` (an ontology, its YAML file, or a comma-separated list) when given, labelling
    a label field's prompts as ``prompts`` says."""
    ontology = load_ontology(groups) if groups else None
    return USAMPredictor(head, config, groups=ontology, threads=threads, prompts=prompts)


def candidate_masks(proposals: MaskProposals, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    """Which of each prompt's ``m`` masks are candidates (a box has one: itself).

    Returns:
        ``(flat, point)``: `(k,)` flat mask indices (``m * point + j``) and `(k,)` their points.
    """
    d, m = proposals.num_points, proposals.masks_per_point
    points = np.arange(d)
    if granularity == "all":
        return np.arange(m * d, dtype=np.int64), np.repeat(points, m)
    if m == 1:
        return points.astype(np.int64), points
    if granularity == "best":
        choice = proposals.iou_predictions.argmax(axis=1)
    else:
        by_area = np.argsort(proposals.mask_areas(), axis=1, kind="stable")  # small -> large
        choice = by_area[:, {"fine": 0, "medium": 1, "coarse": 2}[granularity]]
    return (m * points + choice).astype(np.int64), points


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
