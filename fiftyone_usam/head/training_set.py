"""What the head trains on: each image's class and its bag of mask embeddings.

`build_training_set` takes each image's class name and an EmbeddingStore (the FiftyOne side,
`fiftyone_io.training_set.load_training_set`, reads the names from a view), refusing what
cannot train a head (no labels, one class, labels outside the ontology, NaN/inf embeddings)
and skipping, with a warning, samples the store lacks.
`check_training_arrays` applies the same checks to in-memory arrays.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.errors import StoreError, USAMError
from fiftyone_usam.ontology import Ontology

logger = logging.getLogger(__name__)

_SHOWN = 10  # sample ids named in a message before "..."


class TrainingDataError(USAMError, ValueError):
    """The labels or embeddings cannot train a head (the message says why and what to do)."""


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """Labelled bags of mask embeddings, one per image.

    Attributes:
        sample_ids: FiftyOne sample ids, one per image.
        labels: `(N,)` int64, each image's class as an index into ``classes``.
        classes: class names in output order.
        embeddings: `(N, d, 1024)` float16 mask embeddings.
        spec: the spec of the store they came from.
        store: the store's directory.
        skipped: sample id -> why it was left out (no label, not in the store).
    """

    sample_ids: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    embeddings: np.ndarray
    spec: StoreSpec
    store: Path
    skipped: dict[str, str] = field(default_factory=dict)


def build_training_set(
    labelled: Sequence[tuple[str, str | None]],
    store: EmbeddingStore,
    *,
    label_field: str,
    ontology: Ontology | None = None,
    superclasses: bool = False,
    source: str = "the dataset",
) -> TrainingSet:
    """A training set from ``(sample_id, class name or None)`` pairs and their embeddings.

    Args:
        labelled: each image's id and class name (None: no label; such images are skipped).
        store: an EmbeddingStore holding the images.
        label_field: where the labels came from, for messages.
        ontology: the classes, in output order; default: the distinct labels, sorted.
        superclasses: train on the ontology's superclasses: each label becomes its class's
            superclass (a class without one stays itself).
        source: the images' collection, for messages (e.g. the dataset's name).

    Raises:
        TrainingDataError: no labels, fewer than two classes, labels outside the ontology.
        StoreError: none of the samples is in the store, or an embedding is NaN/inf.
    """
    skipped = {i: f"no {label_field} label" for i, n in labelled if not n}
    if skipped:
        _warn("have no label", skipped, source)
    named = [(i, n) for i, n in labelled if n]
    classes = _classes([n for _, n in named], label_field, ontology)
    if superclasses:
        named, classes = _to_superclasses(named, ontology)
    missing = {i: "not in the EmbeddingStore" for i, _ in named if i not in store}
    if missing:
        _warn(f"are not in the EmbeddingStore at {store.path}", missing, source)
        if len(missing) == len(named):
            raise StoreError(
                f"none of the {len(named)} labelled samples is in the EmbeddingStore at "
                f"{store.path}: embed this dataset into it first (`usam embed --store "
                f"{store.path}`), or pass the store it was embedded into"
            )
    kept = [(i, n) for i, n in named if i not in missing]
    sample_ids = tuple(i for i, _ in kept)
    embeddings = store.load_embeddings(sample_ids)
    _check_finite(embeddings, sample_ids, f"the EmbeddingStore at {store.path}", StoreError)
    index = {name: k for k, name in enumerate(classes)}
    labels = np.array([index[n] for _, n in kept], dtype=np.int64)
    _check_classes_present(labels, classes)
    return TrainingSet(
        sample_ids, labels, classes, embeddings, store.spec, Path(store.path), skipped | missing
    )


def check_training_arrays(
    embeddings: Any, labels: Any, classes: Sequence[str], input_dim: int
) -> np.ndarray:
    """Checks in-memory training arrays; returns the labels as `(N,)` int64.

    Args:
        embeddings: `(N, d, input_dim)` float array or tensor.
        labels: `(N,)` class indices into ``classes``.
        classes: the class names (at least two, unique).
        input_dim: the head's input size.

    Raises:
        TrainingDataError: on any shape, value or class problem, saying which.
    """
    shape = tuple(embeddings.shape)
    if len(shape) != 3 or shape[2] != input_dim or shape[1] < 1:
        raise TrainingDataError(
            f"embeddings must have shape (N, d, {input_dim}), one bag of d mask embeddings per "
            f"image; got {shape}"
        )
    if len(set(classes)) != len(classes):
        raise TrainingDataError(f"class names must be unique, got {list(classes)}")
    labels = np.asarray(labels)
    if labels.shape != (shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise TrainingDataError(
            f"labels must be {shape[0]} integer class indices (one per image), got "
            f"{labels.dtype} of shape {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise TrainingDataError(
            f"labels must index the {len(classes)} classes (0..{len(classes) - 1}); found "
            f"{sorted({int(v) for v in labels if not 0 <= v < len(classes)})}"
        )
    _check_finite(embeddings, [str(i) for i in range(shape[0])], "the embeddings (image index)")
    labels = labels.astype(np.int64)
    _check_classes_present(labels, tuple(classes))
    return labels


def _classes(names: list[str], label_field: str, ontology: Ontology | None) -> tuple[str, ...]:
    if not names:
        raise TrainingDataError(
            f"no sample has a {label_field} label: the head learns from one fo.Classification "
            "per image"
        )
    if ontology is None:
        return tuple(sorted(set(names)))
    unknown = Counter(n for n in names if n not in ontology)
    if unknown:
        listed = ", ".join(f"{n!r} ({c} samples)" for n, c in sorted(unknown.items()))
        raise TrainingDataError(
            f"labels not in the ontology ({', '.join(ontology.names)}): {listed}. Add them to the "
            "ontology, or leave those samples out of the training view (e.g. with a tag)"
        )
    return ontology.names


def _to_superclasses(
    labelled: list[tuple[str, str]], ontology: Ontology | None
) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    if ontology is None or not ontology.superclasses():
        raise TrainingDataError(
            "training on superclasses needs an ontology that groups the classes (a YAML with "
            "`superclass:` per class or a `superclasses:` map), given as --classes or stored "
            "with the dataset"
        )
    group = {spec.name: spec.superclass or spec.name for spec in ontology.classes}
    return [(i, group[n]) for i, n in labelled], ontology.to_superclasses().names


def _check_classes_present(labels: np.ndarray, classes: tuple[str, ...]) -> None:
    present = set(labels.tolist())
    if len(present) < 2:
        only = f"only {classes[next(iter(present))]!r}" if present else "none"
        raise TrainingDataError(
            f"the training images show {len(present)} class ({only}): a head needs images of at "
            "least two classes, since it learns what tells them apart"
        )
    absent = [c for k, c in enumerate(classes) if k not in present]
    if absent:
        logger.warning(
            "no training image of %d class(es): %s; the head will hardly ever predict them",
            len(absent),
            ", ".join(absent),
        )


def _check_finite(
    embeddings: Any, names: Sequence[str], where: str, error: type[USAMError] = TrainingDataError
) -> None:
    """Raises ``error`` naming the images with a NaN or infinite value (checked in chunks)."""
    bad: list[str] = []
    for start in range(0, len(names), 256):
        chunk = embeddings[start : start + 256]
        chunk = np.asarray(chunk.detach().cpu() if hasattr(chunk, "detach") else chunk)
        bad += [names[start + int(k)] for k in np.flatnonzero(~np.isfinite(chunk).all(axis=(1, 2)))]
    if bad:
        raise error(
            f"NaN or infinite embeddings in {where} for {len(bad)} image(s): {_ids(bad)}. "
            "Embed those images again (into a new store, or after deleting the shards that "
            "hold them); half-precision overflow on the GPU is a common cause"
        )


def _warn(what: str, skipped: dict[str, str], source: str) -> None:
    logger.warning(
        "skipping %d sample(s) of %r that %s: %s", len(skipped), source, what, _ids(list(skipped))
    )


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN])
    return shown + (f" ... and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")
