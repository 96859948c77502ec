"""A planted domain shift: source bags to train a head on, and shifted target scenes to adapt it to.

The source is `fiftyone_usam.testing.planted`'s kind of data (objects near their class's
prototype, parts mixed with a random direction, background near one of a few shared
prototypes, per-image offsets, noise, then a shared offset and per-feature scale). The target
shows the same classes after a shift of strength ``s`` (0: none; 1: strong; more is allowed):

- the class prototypes drift: each turns by ``s * drift_angle`` degrees towards a random
  direction of its own, as objects look different under another camera or style;
- a global offset of norm ``s * offset`` moves every target mask, as a different sensor does;
- the target's background prototypes are new: the source's turned like the classes, then
  leaning (by ``s * lean``) towards one class each (grass that starts to look like a cow);
- every target scene comes with a second view: the same masks (kinds, prototypes, part mixes,
  image offset) with fresh per-mask noise, as the same image under an augmentation.

At ``s = 0`` the target is the source's distribution (other images): adaptation must not hurt it.
Kinds and labels come with the target so accuracy can be measured; an adapting method never
sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fiftyone_usam.testing.planted import OBJECT, PART, PlantedBags


@dataclass(frozen=True)
class ShiftedScenes:
    """A source set and its shifted target, with their answers.

    Attributes:
        source: bags to train the head on (`PlantedBags`, `(N_s, d, dim)` float32).
        target: the target scenes, `(N_t, d, dim)` float32, with their labels and kinds.
        view: `(N_t, d, dim)` float32: the target scenes again, mask ``i`` of a scene the same
            mask as in ``target`` with fresh noise.
        strength: the shift's ``s``.
    """

    source: PlantedBags
    target: PlantedBags
    view: np.ndarray
    strength: float


@dataclass(frozen=True)
class _World:
    classes: np.ndarray  # (C, dim) unit prototypes
    background: np.ndarray  # (B, dim) unit prototypes
    offset: np.ndarray  # (dim,) raw-space offset, before the per-feature scale
    shift: np.ndarray  # (dim,) the shared offset of every embedding
    scale: np.ndarray  # (dim,) the per-feature scale


def make_shifted_scenes(
    strength: float,
    *,
    num_classes: int = 4,
    source_images_per_class: int = 20,
    target_images_per_class: int = 25,
    masks_per_image: int = 100,
    dim: int = 256,
    drift_angle: float = 80.0,
    offset: float = 2.0,
    lean: float = 0.3,
    noise: float = 0.7,
    image_offset: float = 0.3,
    seed: int = 0,
) -> ShiftedScenes:
    """Builds a source set and a target shifted by ``strength`` (see the module docstring).

    The source depends on ``seed`` only, so heads trained on it can be reused across strengths.

    Args:
        strength: ``s >= 0``; 0 is no shift.
        num_classes: ``C``.
        source_images_per_class: source images of each class, in class order.
        target_images_per_class: target scenes of each class, in class order.
        masks_per_image: ``d``.
        dim: embedding size.
        drift_angle: degrees a class (and background) prototype turns at ``s = 1``.
        offset: norm of the global offset at ``s = 1`` (a prototype has norm 1).
        lean: weight of a class prototype added to each target background prototype at ``s = 1``.
        noise: norm of the per-mask noise.
        image_offset: norm of the offset shared by the masks of one image.
        seed: seeds everything.

    Returns:
        `ShiftedScenes`; the target's and the view's masks are in the same random order.
    """
    if strength < 0:
        raise ValueError(f"the shift's strength must be at least 0, got {strength}")
    rng = np.random.default_rng(seed)
    world = _World(
        classes=_unit(rng.standard_normal((num_classes, dim))),
        background=_unit(rng.standard_normal((2, dim))),
        offset=np.zeros(dim),
        shift=rng.standard_normal(dim) * 3.0,
        scale=np.exp(rng.normal(0.0, 1.0, dim)),
    )
    names = tuple(f"class_{c}" for c in range(num_classes))
    shape = (masks_per_image, noise, image_offset)
    source, _ = _render(world, source_images_per_class, shape, rng, names)
    # the target's own generator: its draws do not change the source's
    shifted = _shift(world, strength, drift_angle, offset, lean, np.random.default_rng(seed + 1))
    target, view = _render(
        shifted, target_images_per_class, shape, np.random.default_rng(seed + 2), names
    )
    return ShiftedScenes(source, target, view, float(strength))


def _shift(
    world: _World,
    s: float,
    angle: float,
    offset: float,
    lean: float,
    rng: np.random.Generator,
) -> _World:
    """The target's world: prototypes turned, a global offset, background leaning to classes."""
    theta = np.deg2rad(angle * s)
    classes = _turn(world.classes, theta, rng)
    background = _turn(world.background, theta, rng)
    leaning = classes[np.arange(len(background)) % len(classes)]
    background = _unit(background + s * lean * leaning)
    direction = _unit(rng.standard_normal(world.offset.shape))
    return _World(classes, background, s * offset * direction, world.shift, world.scale)


def _turn(protos: np.ndarray, theta: float, rng: np.random.Generator) -> np.ndarray:
    """Each unit row turned by ``theta`` radians towards a random direction orthogonal to it."""
    random = rng.standard_normal(protos.shape)
    random -= (random * protos).sum(-1, keepdims=True) * protos
    return _unit(np.cos(theta) * protos + np.sin(theta) * _unit(random))


def _render(
    world: _World,
    per_class: int,
    shape: tuple[int, float, float],
    rng: np.random.Generator,
    names: tuple[str, ...],
) -> tuple[PlantedBags, np.ndarray]:
    """Bags of ``per_class`` images per class, and a second view of them (fresh noise)."""
    d, noise, image_offset = shape
    num_classes, dim = world.classes.shape
    labels = np.repeat(np.arange(num_classes), per_class)
    kinds = np.zeros((len(labels), d), np.int8)
    z = np.empty((len(labels), d, dim))
    for i, c in enumerate(labels):
        kinds[i] = _kinds(rng, d)
        which = world.background[rng.integers(0, len(world.background), d)]
        mix = rng.uniform(0.3, 0.7, (d, 1))
        random = _unit(rng.standard_normal((d, dim)))
        part = mix * world.classes[c] + (1 - mix) * random
        obj = (kinds[i] == OBJECT)[:, None]
        z[i] = np.where(obj, world.classes[c], np.where((kinds[i] == PART)[:, None], part, which))
        z[i] += image_offset * _unit(rng.standard_normal((dim,)))
    z += world.offset
    views = [z + rng.standard_normal(z.shape) * (noise / np.sqrt(dim)) for _ in range(2)]
    first, second = ((world.shift + world.scale * v).astype(np.float32) for v in views)
    return PlantedBags(first, labels.astype(np.int64), kinds, names), second


def _kinds(rng: np.random.Generator, d: int) -> np.ndarray:
    """Planted's mix of kinds: 5-10 objects and 8-14 parts per 100 masks, the rest background."""
    n_obj = int(rng.integers(round(d * 0.05), round(d * 0.10) + 1))
    n_part = int(rng.integers(round(d * 0.08), round(d * 0.14) + 1))
    kinds = np.zeros(d, np.int8)
    kinds[: max(1, n_obj)] = OBJECT
    kinds[max(1, n_obj) : max(1, n_obj) + n_part] = PART
    return rng.permutation(kinds)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
