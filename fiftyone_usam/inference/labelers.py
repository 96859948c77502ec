"""Baselines as proposal labelers: SAM's masks named by CLIP, and Otsu's threshold.

Both return the `Prediction` of `USAMPredictor`, so `label_view` writes them into the same
three fields (semantic map, instances, uncertainty) and the same evaluation reads them.

- `SamClipLabeler`: the same SAM mask proposals U-SAM's head labels (same store, same
  ``granularity``), each mask cut out of the image (`masked_crop`) and classified zero-shot by
  CLIP against the class prompts; a mask is kept when its best class probability reaches the
  threshold (0.7, as in the paper), then mask NMS.
- `OtsuLabeler`: class-agnostic; Otsu's threshold on the grayscale image splits foreground from
  background (`otsu_foreground`), no SAM and no classes beyond ``foreground``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.inference.postprocess import (
    Instances,
    entropy,
    mask_nms,
    threshold_candidates,
)
from fiftyone_usam.inference.predictor import (
    Prediction,
    PredictorConfig,
    candidate_masks,
    image_uncertainty,
)
from fiftyone_usam.masks import Rle, decode_rles, encode_masks, rle_areas

Method = Literal["sam-clip", "otsu"]
METHODS: tuple[str, ...] = ("sam-clip", "otsu")  # the baselines, as `usam baseline --method`

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.proposals import MaskProposals
    from fiftyone_usam.inference.clip_backend import LoadedClip
    from fiftyone_usam.ontology import Ontology

SAM_CLIP_THRESHOLD = 0.7  # the paper's confidence threshold for the SAM+CLIP baseline
FOREGROUND = "foreground"


class OneImageAtATime:
    """`predict_batch` for a labeler that labels each image on its own."""

    def predict_proposals(
        self, proposals: MaskProposals | None, image: np.ndarray | None = None
    ) -> Prediction:
        raise NotImplementedError

    def predict_batch(
        self,
        proposals: Sequence[MaskProposals | None],
        images: Sequence[np.ndarray | None] | None = None,
    ) -> list[Prediction]:
        """`predict_proposals` of each image, in order."""
        pictures = [None] * len(proposals) if images is None else images
        return [
            self.predict_proposals(p, image) for p, image in zip(proposals, pictures, strict=True)
        ]


class SamClipLabeler(OneImageAtATime):
    """Labels SAM's mask proposals with CLIP's zero-shot class probabilities.

    Per image: the candidate masks ``config.granularity`` chooses (as `USAMPredictor` does);
    each non-empty mask's `masked_crop` (fill: CLIP's mean colour) embedded by CLIP; class
    probabilities = softmax over the classes of ``logit_scale * cosine(crop, class prompt)``;
    masks whose best probability reaches the threshold are kept, then mask NMS.

    Args:
        clip: a loaded CLIP (`load_clip`).
        ontology: the classes; each is described by its prompts (``Ontology.prompts_for``,
            by default ``"a photo of a {}"``); several prompts of a class are averaged.
        config: threshold (None: 0.7), NMS and granularity, as for `USAMPredictor`.
        batch_size: crops per CLIP forward pass.
    """

    needs_image = True
    needs_proposals = True

    def __init__(
        self,
        clip: LoadedClip,
        ontology: Ontology,
        config: PredictorConfig | None = None,
        *,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.clip = clip
        self.ontology = ontology
        self.config = config or PredictorConfig()
        self.threshold = (
            SAM_CLIP_THRESHOLD if self.config.threshold is None else self.config.threshold
        )
        self.batch_size = batch_size
        self.fill = clip.image_mean
        self.text = class_embeddings(clip, ontology)  # (C, D)

    @property
    def classes(self) -> tuple[str, ...]:
        """The ontology's class names; label ``i`` is ``classes[i - 1]``."""
        return self.ontology.names

    def predict_proposals(
        self, proposals: MaskProposals | None, image: np.ndarray | None = None
    ) -> Prediction:
        """Labels one image from its proposals and the `(H, W, 3)` uint8 RGB image."""
        if proposals is None:
            raise ConfigError("SamClipLabeler labels SAM's mask proposals: none were given")
        image = _checked_image(image, proposals.image_size)
        flat, _ = candidate_masks(proposals, self.config.granularity)
        rles = [proposals.rle(int(i)) for i in flat]
        nonempty = np.flatnonzero(rle_areas(rles) > 0)  # an empty mask has nothing to show CLIP
        rles = [rles[int(i)] for i in nonempty]
        probs = self.mask_probabilities(image, rles)
        return prediction_from_probabilities(
            rles, probs, flat[nonempty], proposals.image_size, self.threshold, self.config
        )

    def mask_probabilities(self, image: np.ndarray, rles: Sequence[Rle]) -> np.ndarray:
        """CLIP's class probabilities of masks of ``image``.

        Returns:
            `(n, C)` float32, each row summing to 1.
        """
        size = (int(image.shape[0]), int(image.shape[1]))
        features = [
            self.clip.encode_images(
                [masked_crop(image, mask, self.fill) for mask in decode_rles(batch, size)],
                self.batch_size,
            )
            for batch in _chunks(rles, self.batch_size)
        ]
        if not features:
            return np.zeros((0, len(self.classes)), np.float32)
        logits = self.clip.logit_scale * np.concatenate(features) @ self.text.T
        return _softmax(logits)

    def describe(self) -> dict[str, Any]:
        """What a run records about the labeler."""
        return {
            "method": "sam-clip",
            "classes": list(self.classes),
            "prompts": {name: list(self.ontology.prompts_for(name)) for name in self.classes},
            "clip_model": self.clip.name,
            "threshold": self.threshold,
            "nms_iou": self.config.nms_iou,
            "granularity": self.config.granularity,
            "class_agnostic_nms": self.config.class_agnostic_nms,
            "crop_fill": list(self.fill),
        }


def class_embeddings(clip: LoadedClip, ontology: Ontology) -> np.ndarray:
    """One unit vector per class: the mean of its prompts' CLIP embeddings, renormalised.

    Returns:
        `(C, D)` float32.
    """
    prompts = [ontology.prompts_for(name) for name in ontology.names]
    flat = clip.encode_text([p for group in prompts for p in group])
    bounds = np.cumsum([0, *(len(group) for group in prompts)])
    means = np.stack([flat[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)])
    return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )


def masked_crop(image: np.ndarray, mask: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    """The mask's pixels in their tight box, the rest ``fill``, padded to a centred square.

    The square keeps the whole mask inside CLIP's centre crop. ``fill`` is CLIP's mean colour,
    which normalises to 0: the surroundings carry no signal, as neutral as a colour can be.

    Args:
        image: `(H, W, 3)` uint8 RGB.
        mask: `(H, W)` bool, not empty.
        fill: uint8 RGB.

    Returns:
        `(s, s, 3)` uint8 with ``s = max(box height, box width)``.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("masked_crop needs a non-empty mask")
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = image[y0:y1, x0:x1].copy()
    crop[~mask[y0:y1, x0:x1]] = fill
    height, width = crop.shape[:2]
    side = max(height, width)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = fill
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = crop
    return out


def prediction_from_probabilities(
    rles: Sequence[Rle],
    probs: np.ndarray,
    sources: np.ndarray,
    image_size: tuple[int, int],
    threshold: float,
    config: PredictorConfig,
) -> Prediction:
    """Threshold, mask NMS, instances and semantic map from per-mask class probabilities.

    Args:
        rles: ``n`` candidate masks.
        probs: `(n, C)` class probabilities, one row per mask.
        sources: `(n,)` each mask's flat index among the image's proposals.
        image_size: `(H, W)`.
        threshold: minimum probability of a mask's best class.
        config: NMS settings.
    """
    keep, labels, confidences = threshold_candidates(probs, threshold)
    kept = [rles[int(i)] for i in keep]
    order = mask_nms(
        kept, confidences, labels, config.nms_iou, class_agnostic=config.class_agnostic_nms
    )
    instances = Instances(
        rles=tuple(kept[int(i)] for i in order),
        labels=labels[order],
        confidences=confidences[order],
        entropies=entropy(probs[keep[order]]),
        sources=np.asarray(sources)[keep[order]].astype(np.int64),
    )
    return Prediction(instances, None, image_uncertainty(instances, probs.shape[1]), image_size)


class OtsuLabeler(OneImageAtATime):
    """Class-agnostic baseline: Otsu's threshold on the grayscale image.

    The semantic map is the whole Otsu foreground (1 = ``foreground``). Instances are its
    8-connected components of at least ``min_area`` pixels, the ``max_instances`` largest,
    largest first, each with confidence 1.0 (Otsu has no score); their ``sources`` are the
    component numbers. Uncertainty is 0.0, or 1.0 when no instance was found.

    Args:
        min_area: smallest component (pixels) that becomes an instance.
        max_instances: at most this many instances per image.
    """

    needs_image = True
    needs_proposals = False

    def __init__(self, *, min_area: int = 16, max_instances: int = 100) -> None:
        if min_area < 1 or max_instances < 1:
            raise ConfigError("min_area and max_instances must be at least 1")
        self.min_area = min_area
        self.max_instances = max_instances

    @property
    def classes(self) -> tuple[str, ...]:
        """``("foreground",)``."""
        return (FOREGROUND,)

    def predict_proposals(
        self, proposals: MaskProposals | None = None, image: np.ndarray | None = None
    ) -> Prediction:
        """Labels one `(H, W, 3)` uint8 RGB image (``proposals`` are not used)."""
        if image is None:
            raise ConfigError("OtsuLabeler thresholds the image: pass it")
        foreground = otsu_foreground(image)
        instances = self._components(foreground)
        size = (int(foreground.shape[0]), int(foreground.shape[1]))
        return Prediction(
            instances, foreground.astype(np.uint8), image_uncertainty(instances, 1), size
        )

    def describe(self) -> dict[str, Any]:
        """What a run records about the labeler."""
        return {
            "method": "otsu",
            "classes": [FOREGROUND],
            "polarity": "the side with fewer image-border pixels is foreground",
            "instances": "8-connected components",
            "min_area": self.min_area,
            "max_instances": self.max_instances,
        }

    def _components(self, foreground: np.ndarray) -> Instances:
        from skimage.measure import label

        components = label(foreground, connectivity=2)  # (H, W) int, 0 = background
        areas = np.bincount(components.ravel())
        areas[0] = 0
        ids = np.argsort(-areas, kind="stable")
        ids = ids[areas[ids] >= self.min_area][: self.max_instances]
        size = list(foreground.shape)
        n = len(ids)
        counts = encode_masks(components[..., None] == ids[None, None, :]) if n else []
        return Instances(
            rles=tuple({"size": size, "counts": c} for c in counts),
            labels=np.ones(n, np.int64),
            confidences=np.ones(n, np.float32),
            entropies=np.zeros(n, np.float32),
            sources=ids.astype(np.int64),
        )


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """Otsu's foreground of an image.

    The grayscale image (luminance, ``skimage.color.rgb2gray``) is split at Otsu's threshold.
    Foreground is the side with fewer pixels on the image border (objects rarely surround the
    picture); on a tie, the side with fewer pixels; on a tie again, the brighter side. An image
    of one grey level has no foreground.

    Args:
        image: `(H, W, 3)` uint8 RGB (or `(H, W)` gray).

    Returns:
        `(H, W)` bool.
    """
    from skimage.color import rgb2gray
    from skimage.filters import threshold_otsu

    gray = rgb2gray(image) if image.ndim == 3 else image.astype(np.float64)
    if gray.min() == gray.max():
        return np.zeros(gray.shape, bool)
    bright = gray > threshold_otsu(gray)
    border = np.concatenate([bright[0], bright[-1], bright[:, 0], bright[:, -1]])
    bright_border, dark_border = int(border.sum()), int(border.size - border.sum())
    if bright_border != dark_border:
        return bright if bright_border < dark_border else ~bright
    bright_area = int(bright.sum())
    return bright if bright_area <= bright.size - bright_area else ~bright


def _checked_image(image: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    if image is None:
        raise ConfigError("SamClipLabeler crops the masks out of the image: pass it")
    if tuple(image.shape[:2]) != tuple(size):
        raise ConfigError(
            f"the image is {image.shape[1]}x{image.shape[0]} but its mask proposals are "
            f"{size[1]}x{size[0]}: the file changed after it was embedded; embed it again "
            "into a new store"
        )
    return image


def _chunks(items: Sequence[Rle], size: int) -> list[Sequence[Rle]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
