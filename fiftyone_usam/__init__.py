"""fiftyone-usam: SAM as a semantic segmenter for the classes you name (U-SAM), for FiftyOne.

The public API is re-exported here and imported lazily, so ``import fiftyone_usam`` is cheap
(FiftyOne imports plugins at App start, and the CLI should answer ``--help`` at once).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fiftyone_usam.version import __version__

_EXPORTS = {
    "embed": "fiftyone_usam.stages.embed",
    "EmbedReport": "fiftyone_usam.stages.embed",
    "EmbeddingStore": "fiftyone_usam.embeddings.store",
    "StoreSpec": "fiftyone_usam.embeddings.store",
    "MaskEmbeddingExtractor": "fiftyone_usam.embeddings.extractor",
    "MaskProposals": "fiftyone_usam.embeddings.proposals",
    "load_sam": "fiftyone_usam.embeddings.sam_backend",
    "LoadedSam": "fiftyone_usam.embeddings.sam_backend",
    "SamVariant": "fiftyone_usam.embeddings.sam_variants",
    "register_variant": "fiftyone_usam.embeddings.sam_variants",
    "find_store": "fiftyone_usam.fiftyone_io.datasets",
    "load_rgb": "fiftyone_usam.images",
    "USAMError": "fiftyone_usam.errors",
    "Ontology": "fiftyone_usam.ontology",
    "load_ontology": "fiftyone_usam.ontology",
    "generate": "fiftyone_usam.stages.generate",
    "GenerateReport": "fiftyone_usam.stages.generate",
    "crawl": "fiftyone_usam.stages.crawl",
    "CrawlReport": "fiftyone_usam.stages.crawl",
    "stored_ontology": "fiftyone_usam.fiftyone_io.training_dataset",
    "train_head": "fiftyone_usam.stages.train",
    "TrainReport": "fiftyone_usam.stages.train",
    "fit_head": "fiftyone_usam.head.train",
    "TrainConfig": "fiftyone_usam.head.config",
    "HeadConfig": "fiftyone_usam.head.model",
    "Head": "fiftyone_usam.head.classifier",
    "load_head": "fiftyone_usam.head.checkpoint",
    "refine": "fiftyone_usam.stages.refine",
    "RefineReport": "fiftyone_usam.stages.refine",
    "refine_head": "fiftyone_usam.head.refine",
    "adapt": "fiftyone_usam.stages.adapt",
    "AdaptReport": "fiftyone_usam.stages.adapt",
    "adapt_head": "fiftyone_usam.head.adapt",
    "AdaptConfig": "fiftyone_usam.head.adapt_config",
    "measure_target": "fiftyone_usam.head.adapt",
    "predict": "fiftyone_usam.stages.predict",
    "PredictReport": "fiftyone_usam.stages.predict",
    "load_model": "fiftyone_usam.fiftyone_io.model",
    "USAMPredictor": "fiftyone_usam.inference.predictor",
    "baseline": "fiftyone_usam.stages.baseline",
    "BaselineReport": "fiftyone_usam.stages.baseline",
    "SamClipLabeler": "fiftyone_usam.inference.labelers",
    "OtsuLabeler": "fiftyone_usam.inference.labelers",
    "load_clip": "fiftyone_usam.inference.clip_backend",
    "evaluate": "fiftyone_usam.stages.evaluate",
    "import_voc": "fiftyone_usam.stages.benchmarks",
    "import_coco": "fiftyone_usam.stages.benchmarks",
    "voc_ontology": "fiftyone_usam.evaluation.benchmark_classes",
    "coco_ontology": "fiftyone_usam.evaluation.benchmark_classes",
    "EvaluationReport": "fiftyone_usam.evaluation.report",
    "run": "fiftyone_usam.stages.pipeline",
    "PipelineReport": "fiftyone_usam.stages.pipeline",
    "demo": "fiftyone_usam.stages.demo",
    "PredictorConfig": "fiftyone_usam.inference.predictor",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor as MaskEmbeddingExtractor
    from fiftyone_usam.embeddings.proposals import MaskProposals as MaskProposals
    from fiftyone_usam.embeddings.sam_backend import LoadedSam as LoadedSam
    from fiftyone_usam.embeddings.sam_backend import load_sam as load_sam
    from fiftyone_usam.embeddings.sam_variants import (
        SamVariant as SamVariant,
    )
    from fiftyone_usam.embeddings.sam_variants import (
        register_variant as register_variant,
    )
    from fiftyone_usam.embeddings.store import (
        EmbeddingStore as EmbeddingStore,
    )
    from fiftyone_usam.embeddings.store import (
        StoreSpec as StoreSpec,
    )
    from fiftyone_usam.errors import USAMError as USAMError
    from fiftyone_usam.evaluation.benchmark_classes import coco_ontology as coco_ontology
    from fiftyone_usam.evaluation.benchmark_classes import voc_ontology as voc_ontology
    from fiftyone_usam.evaluation.report import EvaluationReport as EvaluationReport
    from fiftyone_usam.fiftyone_io.datasets import find_store as find_store
    from fiftyone_usam.fiftyone_io.model import load_model as load_model
    from fiftyone_usam.fiftyone_io.training_dataset import stored_ontology as stored_ontology
    from fiftyone_usam.head.adapt import adapt_head as adapt_head
    from fiftyone_usam.head.adapt import measure_target as measure_target
    from fiftyone_usam.head.adapt_config import AdaptConfig as AdaptConfig
    from fiftyone_usam.head.checkpoint import load_head as load_head
    from fiftyone_usam.head.classifier import Head as Head
    from fiftyone_usam.head.config import TrainConfig as TrainConfig
    from fiftyone_usam.head.model import HeadConfig as HeadConfig
    from fiftyone_usam.head.refine import refine_head as refine_head
    from fiftyone_usam.head.train import fit_head as fit_head
    from fiftyone_usam.images import load_rgb as load_rgb
    from fiftyone_usam.inference.clip_backend import load_clip as load_clip
    from fiftyone_usam.inference.labelers import OtsuLabeler as OtsuLabeler
    from fiftyone_usam.inference.labelers import SamClipLabeler as SamClipLabeler
    from fiftyone_usam.inference.predictor import PredictorConfig as PredictorConfig
    from fiftyone_usam.inference.predictor import USAMPredictor as USAMPredictor
    from fiftyone_usam.ontology import Ontology as Ontology
    from fiftyone_usam.ontology import load_ontology as load_ontology
    from fiftyone_usam.stages.adapt import AdaptReport as AdaptReport
    from fiftyone_usam.stages.adapt import adapt as adapt
    from fiftyone_usam.stages.baseline import BaselineReport as BaselineReport
    from fiftyone_usam.stages.baseline import baseline as baseline
    from fiftyone_usam.stages.benchmarks import import_coco as import_coco
    from fiftyone_usam.stages.benchmarks import import_voc as import_voc
    from fiftyone_usam.stages.crawl import CrawlReport as CrawlReport
    from fiftyone_usam.stages.crawl import crawl as crawl
    from fiftyone_usam.stages.demo import demo as demo
    from fiftyone_usam.stages.embed import EmbedReport as EmbedReport
    from fiftyone_usam.stages.embed import embed as embed
    from fiftyone_usam.stages.evaluate import evaluate as evaluate
    from fiftyone_usam.stages.generate import GenerateReport as GenerateReport
    from fiftyone_usam.stages.generate import generate as generate
    from fiftyone_usam.stages.pipeline import PipelineReport as PipelineReport
    from fiftyone_usam.stages.pipeline import run as run
    from fiftyone_usam.stages.predict import PredictReport as PredictReport
    from fiftyone_usam.stages.predict import predict as predict
    from fiftyone_usam.stages.refine import RefineReport as RefineReport
    from fiftyone_usam.stages.refine import refine as refine
    from fiftyone_usam.stages.train import TrainReport as TrainReport
    from fiftyone_usam.stages.train import train_head as train_head


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fiftyone_usam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
