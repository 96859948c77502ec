"""`MaskProposals`: what SAM says about one image for its prompts (the point grid, or a label
field's boxes or points).

Masks are kept as COCO compressed RLE (pycocotools), which rebuilds the full-resolution masks
exactly without SAM and costs a few hundred bytes per mask instead of H*W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fiftyone_usam.errors import StoreError
from fiftyone_usam.masks import decode_rles, rle_areas

MASKS_PER_POINT = 3  # SAM's multimask output: roughly whole, part, sub-part


@dataclass(frozen=True, eq=False)
class MaskProposals:
    """SAM's outputs for one image and its ``d`` prompts, ``m`` masks each (3 for points,
    SAM's multimask output; 1 for a box).

    Attributes:
        embeddings: `(d, 1024)` float16; per prompt, the mask decoder's 4 output mask tokens
            (4 x 256) flattened in token order (all four, whatever ``m``).
        iou_predictions: `(d, m)` float32, SAM's predicted IoU of each mask.
        stability_scores: `(d, m)` float32, IoU of the mask thresholded at +-offset.
        points: `(d, 2)` float32 (x, y) prompt coordinates in pixels of the image (a box's
            centre, a multi-point prompt's mean point).
        image_size: `(H, W)` of the image the masks cover.
        mask_rles: ``d * m`` COCO compressed RLE ``counts`` (bytes), prompt-major: the masks
            of prompt ``i`` are entries ``m*i .. m*i+m-1``; empty for proposals embedded
            without masks (``masks="none"``, enough for training), whose stability scores are
            NaN.
        prompt_ids: for prompts from a label field, the ``d`` label ids; empty for the grid.
        prompt_fingerprint: for those, the fingerprint of the prompts embedded
            (`PromptSet.fingerprint`, as the store recorded it); empty otherwise.
    """

    embeddings: np.ndarray
    iou_predictions: np.ndarray
    stability_scores: np.ndarray
    points: np.ndarray
    image_size: tuple[int, int]
    mask_rles: tuple[bytes, ...]
    prompt_ids: tuple[str, ...] = ()
    prompt_fingerprint: str = ""

    def __post_init__(self) -> None:
        d, m = self.embeddings.shape[0], self.masks_per_point
        assert self.iou_predictions.shape == (d, m) and m in (1, MASKS_PER_POINT)
        assert self.stability_scores.shape == (d, m)
        assert self.points.shape == (d, 2)
        assert len(self.mask_rles) in (0, d * m)
        assert len(self.prompt_ids) in (0, d)

    @property
    def masks_per_point(self) -> int:
        """``m``, SAM's masks per prompt (3 for points, 1 for a box)."""
        return int(self.iou_predictions.shape[1])

    @property
    def has_masks(self) -> bool:
        """False for proposals embedded without masks (``masks="none"``)."""
        return bool(self.mask_rles) or self.num_points == 0

    @property
    def num_points(self) -> int:
        """``d``, the number of point prompts."""
        return int(self.embeddings.shape[0])

    def rle(self, index: int) -> dict[str, object]:
        """The pycocotools RLE dict of mask ``index`` (prompt-major, see ``mask_rles``)."""
        self.require_masks()
        return {"size": list(self.image_size), "counts": self.mask_rles[index]}

    def decode_masks(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Rebuilds full-resolution masks.

        Args:
            indices: flat mask indices (prompt-major); all ``d * m`` when None.

        Returns:
            `(d, m, H, W)` bool when ``indices`` is None, else `(n, H, W)` bool.
        """
        self.require_masks()
        flat = range(len(self.mask_rles)) if indices is None else [int(i) for i in indices]
        masks = decode_rles([self.rle(i) for i in flat], self.image_size)
        if indices is None:
            return masks.reshape(self.num_points, self.masks_per_point, *self.image_size)
        return masks

    def mask_areas(self) -> np.ndarray:
        """`(d, m)` int64 pixel count of every mask, computed from the RLE."""
        self.require_masks()
        areas = rle_areas([self.rle(i) for i in range(len(self.mask_rles))])
        return areas.reshape(self.num_points, self.masks_per_point)

    def require_masks(self) -> None:
        """Refuses proposals that hold no masks.

        Raises:
            StoreError: they were embedded with ``masks="none"``.
        """
        if not self.has_masks:
            raise StoreError(
                "these mask proposals hold no masks: they were embedded with masks='none' "
                "(embeddings only, enough for training). To label these images, embed them "
                "again with masks='full' (usam embed --masks full) into another store"
            )
