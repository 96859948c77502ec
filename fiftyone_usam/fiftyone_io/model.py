"""A FiftyOne model, so that ``dataset.apply_model(model, label_field="usam")`` works.

`load_model` returns a `USAMModel`. For each sample it reads the mask proposals from the
dataset's EmbeddingStore when the store has them (found automatically, or given), and runs SAM
otherwise (loaded on first need). It returns ``{"semantic": fo.Segmentation, "instances":
fo.Detections, "uncertainty": float}``, which FiftyOne writes to ``<label_field>_semantic``,
``<label_field>_instances`` and ``<label_field>_uncertainty``. When ``apply_model`` finishes, the
model finds the semantic field it wrote (its labels carry the run's ``usam_run`` id), sets that
field's ``mask_targets`` and records the run on the dataset. Images are read with
`fiftyone_usam.images.load_rgb` (as ``usam predict`` reads them), so both paths agree.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fiftyone.core.models as fom

from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.sam_backend import weights_sha256
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import ImageLoadError, StoreError
from fiftyone_usam.fiftyone_io.datasets import locate_store
from fiftyone_usam.fiftyone_io.prompts import prompt_kind, read_prompts
from fiftyone_usam.fiftyone_io.writer import record_run, sample_labels, set_field_mask_targets
from fiftyone_usam.head.checkpoint import resolve_head
from fiftyone_usam.images import load_rgb
from fiftyone_usam.inference.predictor import (
    DEFAULT_NMS_IOU,
    Granularity,
    PredictorConfig,
    USAMPredictor,
    build_predictor,
)
from fiftyone_usam.inference.prompted import PromptLabels
from fiftyone_usam.inference.sam_match import sam_for_head
from fiftyone_usam.ontology import Ontology

if TYPE_CHECKING:
    import fiftyone as fo
    import numpy as np
    import torch


logger = logging.getLogger(__name__)


def load_model(
    head: str | Path | Any,
    sam: Any = None,
    *,
    checkpoint: str | Path | None = None,
    store: str | Path | None = None,
    threshold: float | None = None,
    nms_iou: float = DEFAULT_NMS_IOU,
    granularity: Granularity = "best",
    class_agnostic_nms: bool = False,
    groups: str | Path | Ontology | None = None,
    device: str | torch.device | None = None,
    prompt_field: str | None = None,
) -> USAMModel:
    """A FiftyOne model of a trained head, for ``dataset.apply_model(model, "usam")``.

    Args:
        head: a head checkpoint directory (or ``usam train --out`` directory), or a `Head`.
        sam: SAM for images not in a store; default: the variant recorded with the head.
        checkpoint: SAM weights; default: that variant's official checkpoint.
        store: an EmbeddingStore to read proposals from; default: the one recorded on the
            dataset being labelled that fits the head, if any.
        threshold, nms_iou, granularity, class_agnostic_nms: see `PredictorConfig`.
        groups: an ontology with superclasses to merge the head's classes into.
        device: torch device.
        prompt_field: label the masks of each sample's boxes (``fo.Detections``) or points
            (``fo.Keypoints``) in this field, one instance per prompt (see `predict`); a
            sample without prompts gets no labels. Proposals come from the dataset's store
            of these prompts when it holds the sample with the same prompts, else from SAM.
    """
    model, head_path = resolve_head(head, device)
    config = PredictorConfig(threshold, nms_iou, granularity, class_agnostic_nms)
    prompt_labels: dict[str, str | None] = {}  # the prompts' own labels, sample by sample
    prompts = PromptLabels(prompt_labels) if prompt_field else None
    predictor = build_predictor(model, config, groups, prompts=prompts)
    opened = EmbeddingStore.open(store) if store is not None else None
    if opened is not None:
        model.check_compatible(opened.spec)
    extractor = None
    if sam is not None or checkpoint is not None:
        # checked now, once: a mismatch is refused before any sample, not once per sample
        loaded, points = sam_for_head(model, sam, checkpoint, device)
        extractor = MaskEmbeddingExtractor(loaded, points_per_side=points)
    return USAMModel(
        predictor,
        store=opened,
        sam=sam,
        checkpoint=checkpoint,
        device=device,
        head_path=head_path,
        extractor=extractor,
        prompt_field=prompt_field,
        prompt_labels=prompt_labels,
    )


class USAMModel(fom.Model, fom.SamplesMixin):
    """A trained U-SAM head as a FiftyOne model; build it with `load_model`."""

    def __init__(
        self,
        predictor: USAMPredictor,
        *,
        store: EmbeddingStore | None = None,
        sam: Any = None,
        checkpoint: str | Path | None = None,
        device: str | torch.device | None = None,
        head_path: str | None = None,
        extractor: MaskEmbeddingExtractor | None = None,
        prompt_field: str | None = None,
        prompt_labels: dict[str, str | None] | None = None,
    ) -> None:
        fom.SamplesMixin.__init__(self)
        self.prompt_field = prompt_field
        self._prompt_labels = {} if prompt_labels is None else prompt_labels
        self.predictor = predictor
        self.store = store
        self.run_id = uuid.uuid4().hex
        self.head_path = head_path
        self._sam_args = (sam, checkpoint, device)
        self._extractor = extractor
        self._looked_for_store = store is not None
        self._written: tuple[fo.Dataset, str] | None = None
        self._preprocess = False

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def ragged_batches(self) -> bool:
        return False

    @property
    def transforms(self) -> None:
        return None

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = value

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes predicted (``mask_targets`` 1..C)."""
        return tuple(self.predictor.classes)

    def predict(self, arg: np.ndarray, sample: fo.Sample | None = None) -> dict[str, Any] | None:
        """Labels one image (FiftyOne's reading of it is used only without a sample)."""
        return self.predict_all([arg], samples=None if sample is None else [sample])[0]

    def predict_all(
        self, args: list[np.ndarray], samples: list[fo.Sample] | None = None
    ) -> list[dict[str, Any] | None]:
        """Labels a batch of images; returns the three output values per image (None for an
        image that could not be labelled)."""
        if samples is None:
            proposals = self._sam().extract(list(args))
            return [self._labels(p, "") for p in proposals]
        self._remember(samples[0])
        return [self._sample_labels(sample) for sample in samples]

    def _sample_labels(self, sample: fo.Sample) -> dict[str, Any] | None:
        """One sample's labels; None (nothing written) when its image cannot be labelled, so
        one bad image costs only itself and not its whole batch."""
        try:
            return self._labels(self._proposals(sample), sample.id)
        except (ImageLoadError, StoreError, ValueError) as e:
            logger.warning("sample %s not labelled: %s", sample.id, e)
            return None

    def __exit__(self, *args: Any) -> None:
        """Sets ``mask_targets`` of the semantic field written and records the run."""
        if self._written is not None:
            finalize_run(self, *self._written)
            self._written = None

    def _labels(self, proposals: MaskProposals, sample_id: str) -> dict[str, Any]:
        labels = sample_labels(self.predictor.predict_proposals(proposals), self.classes)
        labels["semantic"]["usam_run"] = self.run_id
        return labels

    def _proposals(self, sample: fo.Sample) -> MaskProposals:
        if self.prompt_field is not None:
            return self._prompted(sample)
        if self.store is not None and sample.id in self.store:
            return self.store.get(sample.id)
        return self._sam().extract([load_rgb(sample.filepath)])[0]

    def _prompted(self, sample: fo.Sample) -> MaskProposals:
        """The proposals of the sample's prompts: from the store when it holds these very
        prompts, else from SAM. Raises ValueError for a sample without prompts."""
        assert self.prompt_field is not None
        found = read_prompts(sample.dataset.select(sample.id), self.prompt_field)
        if sample.id in found.skipped:
            raise ValueError(found.skipped[sample.id])
        prompts = found.sets[sample.id]
        self._prompt_labels.update(found.labels)  # what the predictor's PromptLabels read
        if self.store is not None and sample.id in self.store:
            stored = self.store.get(sample.id)
            if stored.prompt_fingerprint == prompts.fingerprint():
                return stored
        return self._sam().extract([load_rgb(sample.filepath)], [prompts])[0]

    def _remember(self, sample: fo.Sample) -> None:
        if self._written is None:
            self._written = (sample.dataset, sample.id)
        if not self._looked_for_store:
            self._looked_for_store = True
            self.store = _store_for(sample.dataset, self.predictor, self.prompt_field)

    def _sam(self) -> MaskEmbeddingExtractor:
        if self._extractor is None:
            loaded, points = sam_for_head(self.predictor.head, *self._sam_args)
            self._extractor = MaskEmbeddingExtractor(loaded, points_per_side=points)
        return self._extractor


def _store_for(
    dataset: fo.Dataset, predictor: USAMPredictor, prompt_field: str | None
) -> EmbeddingStore | None:
    spec = predictor.head.store_spec
    if spec is not None and prompt_field is not None:
        spec = spec.with_prompts(prompt_kind(dataset, prompt_field), prompt_field)
    path = locate_store(dataset, spec) if spec is not None else None
    return EmbeddingStore.open(path) if path is not None else None


def finalize_run(model: USAMModel, dataset: fo.Dataset, sample_id: str) -> None:
    """Finds the semantic field whose label on ``sample_id`` carries the model's run id."""
    import fiftyone as fo

    sample = dataset[sample_id]
    for name in dataset.get_field_schema(embedded_doc_type=fo.Segmentation):
        label = sample[name]
        if label is not None and label.has_field("usam_run") and label["usam_run"] == model.run_id:
            set_field_mask_targets(dataset, name, model.classes)
            prefix = name.removesuffix("_semantic")
            settings = {
                **model.predictor.describe(),
                "head_sha256": weights_sha256(model.predictor.head.model),
            }
            record_run(
                dataset,
                prefix,
                {
                    "head": model.head_path,
                    "settings": settings,
                    "store": str(model.store.path) if model.store is not None else None,
                    "via": "apply_model",
                    "prompt_field": model.prompt_field,
                },
            )
