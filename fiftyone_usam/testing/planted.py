"""Planted-signal bags: synthetic mask embeddings whose right answer is known.

Each image has one class and ``d`` mask embeddings of three kinds: *objects* (near the class's
prototype), *parts* (the class prototype mixed with a random direction) and *background* (near
one of a few background prototypes shared by every class; optionally biased by class, as cows
come with grass). All carry noise and a per-image
offset, and the whole set goes through a shared offset and per-feature scale, since SAM's mask
tokens are far from zero-mean and unit-variance. A head that works labels held-out object masks
with their class and background masks as background; tests and benchmarks check exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND, OBJECT, PART = 0, 1, 2


@dataclass(frozen=True, eq=False)
class PlantedBags:
    """Synthetic bags with their answers.

    Attributes:
        embeddings: `(N, d, dim)` float32.
        labels: `(N,)` int64 class index of each image.
        kinds: `(N, d)` int8: 0 background, 1 object, 2 part.
        classes: class names.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    classes: tuple[str, ...]

    def take(self, indices: np.ndarray) -> PlantedBags:
        """The images at ``indices``."""
        return PlantedBags(
            self.embeddings[indices], self.labels[indices], self.kinds[indices], self.classes
        )

    def split(self, held_out_per_class: int) -> tuple[PlantedBags, PlantedBags]:
        """``(train, held-out)``, the last ``held_out_per_class`` images of each class held out."""
        held = np.concatenate(
            [
                np.flatnonzero(self.labels == c)[-held_out_per_class:]
                for c in range(len(self.classes))
            ]
        )
        keep = np.setdiff1d(np.arange(len(self.labels)), held)
        return self.take(keep), self.take(np.sort(held))

    def expected_labels(self) -> np.ndarray:
        """`(N, d)` int64 label ids a perfect head gives: class + 1 for objects, 0 for background,
        and -1 for parts (ambiguous: either is acceptable)."""
        out = np.full(self.kinds.shape, -1, dtype=np.int64)
        out[self.kinds == BACKGROUND] = 0
        objects = self.kinds == OBJECT
        out[objects] = np.broadcast_to(self.labels[:, None] + 1, self.kinds.shape)[objects]
        return out


def make_planted_bags(
    num_classes: int = 4,
    images_per_class: int = 20,
    *,
    masks_per_image: int = 100,
    objects: tuple[int, int] = (5, 10),
    parts: tuple[int, int] = (8, 14),
    background_prototypes: int = 2,
    background_bias: float = 0.0,
    noise: float = 0.7,
    image_offset: float = 0.3,
    dim: int = 1024,
    seed: int = 0,
) -> PlantedBags:
    """Builds planted-signal bags (see the module docstring).

    Args:
        num_classes: ``C``.
        images_per_class: images of each class, in class order.
        masks_per_image: ``d``.
        objects: inclusive range of object masks per image.
        parts: inclusive range of part masks per image.
        background_prototypes: distinct kinds of background ("sky", "grass", ...).
        background_bias: chance that a background mask shows its class's usual background
            (classes ``2j`` and ``2j + 1`` share background ``j``, as cows and sheep come
            with grass), else a random one. This is what fools an MIL teacher into calling grass
            "cow", and what the student's uncertainty loss is for.
        noise: norm of the per-mask noise, relative to the prototypes' norm of 1.
        image_offset: norm of the offset shared by the masks of one image.
        dim: embedding size.
        seed: seeds everything.

    Returns:
        `PlantedBags` with ``num_classes * images_per_class`` images, masks in random order.
    """
    rng = np.random.default_rng(seed)
    class_protos = _unit(rng.standard_normal((num_classes, dim)))
    background = _unit(rng.standard_normal((background_prototypes, dim)))
    shift = rng.standard_normal(dim) * 3.0
    scale = np.exp(rng.normal(0.0, 1.0, dim))
    count = num_classes * images_per_class
    labels = np.repeat(np.arange(num_classes), images_per_class)
    kinds = np.zeros((count, masks_per_image), np.int8)
    z = np.empty((count, masks_per_image, dim))
    for i, c in enumerate(labels):
        kinds[i] = _kinds(rng, masks_per_image, objects, parts)
        usual = rng.random(masks_per_image) < background_bias
        picks = np.where(
            usual,
            (c // 2) % background_prototypes,
            rng.integers(0, background_prototypes, masks_per_image),
        )
        which = background[picks]
        mix = rng.uniform(0.3, 0.7, (masks_per_image, 1))
        random = _unit(rng.standard_normal((masks_per_image, dim)))
        z[i] = np.where(
            (kinds[i] == OBJECT)[:, None],
            class_protos[c],
            np.where(
                (kinds[i] == PART)[:, None], mix * class_protos[c] + (1 - mix) * random, which
            ),
        )
        z[i] += image_offset * _unit(rng.standard_normal(dim))
    z += rng.standard_normal(z.shape) * (noise / np.sqrt(dim))
    embeddings = (shift + scale * z).astype(np.float32)
    names = tuple(f"class_{c}" for c in range(num_classes))
    return PlantedBags(embeddings, labels.astype(np.int64), kinds, names)


def _kinds(
    rng: np.random.Generator, d: int, objects: tuple[int, int], parts: tuple[int, int]
) -> np.ndarray:
    n_obj = int(rng.integers(objects[0], objects[1] + 1))
    n_part = int(rng.integers(parts[0], parts[1] + 1))
    kinds = np.zeros(d, np.int8)
    kinds[:n_obj] = OBJECT
    kinds[n_obj : n_obj + n_part] = PART
    return rng.permutation(kinds)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
