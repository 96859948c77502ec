"""A view's grid proposals put back in the original image's frame (`embeddings.views`).

The view (mirrored or resized) is embedded with SAM's ordinary grid; its rows are then
reordered so that row ``i`` is the image location of the original's grid point ``i``: for
``hflip`` the grid's own mirror permutation (exact, no interpolation), for ``scale`` the grid
unchanged (its points sit at the same relative places). A view store keeps embeddings only.
"""

from __future__ import annotations

import numpy as np

from fiftyone_usam.embeddings.prompts import grid_points_for_image
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.views import View, grid_flip_permutation


def in_original_frame(
    proposals: MaskProposals, view: View, points_per_side: int, image_size: tuple[int, int]
) -> MaskProposals:
    """A view's proposals with the original's grid order, points and size, and no masks.

    Args:
        proposals: SAM's proposals of the view, on the ``points_per_side`` grid.
        view: the view they were made under.
        points_per_side: the grid.
        image_size: `(H, W)` of the original image.

    Returns:
        `MaskProposals` whose row ``i`` (embedding, IoU predictions) is the view's mask at the
        original's grid point ``i``; ``points`` the original's grid in its pixels.
    """
    d = points_per_side**2
    if proposals.num_points != d or proposals.prompt_ids:
        raise ValueError(f"a view is embedded on the {points_per_side}x{points_per_side} grid")
    order = grid_flip_permutation(points_per_side) if view.kind == "hflip" else np.arange(d)
    return MaskProposals(
        embeddings=proposals.embeddings[order],
        iou_predictions=proposals.iou_predictions[order],
        stability_scores=np.full(proposals.iou_predictions.shape, np.nan, np.float32),
        points=grid_points_for_image(points_per_side, *image_size).astype(np.float32),
        image_size=(int(image_size[0]), int(image_size[1])),
        mask_rles=(),
    )
