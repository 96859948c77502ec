"""SAM's mask decoder on a batch of prompts, with the output mask tokens it does not return.

A prompt is a point grid's point, a box, or a few positive points (a keypoints label). Prompts
are cut into decoder batches of at most ``points_per_batch`` that SAM can take together: boxes
all alike; points in consecutive runs of the same number of points (SAM pads a prompt's points
with one "not a point", so prompts of different lengths are never padded to each other, which
would change their tokens). The tokens are read by a forward hook on the decoder's two-way
transformer: the same four 256-d output mask tokens whatever the prompt, which is what lets a
head trained on grid points name the mask of a box.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.embeddings import sam_backend
from fiftyone_usam.embeddings.prompts import PromptSet, grid_points_for_image

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam


@dataclass(frozen=True, eq=False)
class DecoderBatch:
    """Prompts SAM's decoder takes in one call, in SAM's input frame (resized image pixels).

    Attributes:
        points: `(n, k, 2)` float32 positive points (``k`` the same for all ``n``), or None.
        boxes: `(n, 4)` float32 boxes ``(x0, y0, x1, y1)``, or None.
    """

    points: np.ndarray | None = None
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        held = self.points if self.points is not None else self.boxes
        assert held is not None
        return int(held.shape[0])


def prompt_batches(
    prompts: PromptSet | None,
    points_per_side: int,
    image_size: tuple[int, int],
    target_length: int,
    per_batch: int,
) -> tuple[np.ndarray, list[DecoderBatch]]:
    """An image's prompts as decoder batches, in prompt order.

    Args:
        prompts: a label field's prompts, or None for the ``points_per_side`` grid.
        image_size: `(H, W)` of the original image.
        target_length: SAM's encoder input size (the long side of the resized image).
        per_batch: at most this many prompts per batch.

    Returns:
        ``(anchors, batches)``: `(d, 2)` float32 one point per prompt in the original image's
        pixels (the grid point, a box's centre, a prompt's mean point), and the batches.
    """
    h, w = image_size

    def frame(xy: np.ndarray) -> np.ndarray:  # (..., 2) original pixels -> SAM's input frame
        flat = sam_backend.transform_coords(xy.reshape(-1, 2), (h, w), target_length)
        return flat.reshape(xy.shape).astype(np.float32)

    if prompts is None:
        points = grid_points_for_image(points_per_side, h, w)
        coords = frame(points)[:, None, :]
        batches = [
            DecoderBatch(points=coords[i : i + per_batch]) for i in _starts(coords, per_batch)
        ]
        return points.astype(np.float32), batches
    anchors = prompts.anchors(h, w)
    if prompts.kind == "boxes":
        boxes = frame(prompts.pixel_boxes(h, w).reshape(-1, 2, 2)).reshape(-1, 4)
        return anchors, [
            DecoderBatch(boxes=boxes[i : i + per_batch]) for i in _starts(boxes, per_batch)
        ]
    batches = []
    for run in _same_length_runs(prompts.pixel_points(h, w)):
        stacked = frame(np.stack(run))
        batches += [
            DecoderBatch(points=stacked[i : i + per_batch]) for i in _starts(stacked, per_batch)
        ]
    return anchors, batches


def run_decoder(
    model: Sam, features: torch.Tensor, batch: DecoderBatch, multimask: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One mask-decoder call (call it under ``torch.inference_mode`` and any autocast).

    Args:
        features: `(1, 256, h, w)` image embedding, on the model's device.
        multimask: SAM's three masks per prompt (points), or its single mask (boxes).

    Returns:
        `(n, m, h', w')` low-resolution logits, `(n, m)` IoU predictions (``m`` 3 or 1) and
        `(n, 4, 256)` output mask tokens: what ``SamPredictor.predict_torch`` gives for the
        same prompts, plus the tokens.
    """
    import torch

    device = features.device
    points = None
    if batch.points is not None:
        coords = torch.as_tensor(batch.points, dtype=torch.float, device=device)
        points = (coords, torch.ones(coords.shape[:2], dtype=torch.int, device=device))
    boxes = None
    if batch.boxes is not None:
        boxes = torch.as_tensor(batch.boxes, dtype=torch.float, device=device)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    with capture_mask_tokens(model) as captured:
        low_res, iou = model.mask_decoder(
            image_embeddings=features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
    return low_res, iou, captured["tokens"]


@contextlib.contextmanager
def capture_mask_tokens(model: Sam) -> Iterator[dict[str, torch.Tensor]]:
    """Reads the decoder's output mask tokens, `(n, 4, 256)`, from its transformer's output."""
    decoder = model.mask_decoder
    captured: dict[str, torch.Tensor] = {}

    def hook(module: Any, inputs: Any, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        # Token order is [iou token, mask tokens..., prompt tokens] (MaskDecoder.predict_masks).
        captured["tokens"] = output[0][:, 1 : 1 + decoder.num_mask_tokens, :]

    handle = decoder.transformer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _starts(array: np.ndarray, per_batch: int) -> range:
    return range(0, len(array), max(1, per_batch))


def _same_length_runs(points: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Consecutive prompts with the same number of points, in order."""
    runs: list[list[np.ndarray]] = []
    for p in points:
        if runs and len(runs[-1][0]) == len(p):
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs
