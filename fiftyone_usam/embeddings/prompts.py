"""SAM's prompts (pure numpy): the point grid, or a label field's boxes and points.

The grid is SAM's own (`segment_anything.utils.amg.build_point_grid`): ``n`` points per side,
evenly spaced with a half-step margin, ordered row by row (x fastest). A `PromptSet` is one
image's boxes (a ``fo.Detections`` field) or points (``fo.Keypoints``), each prompt named by
its label's id; `fiftyone_io.prompts` reads them from a dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


def point_grid(points_per_side: int) -> np.ndarray:
    """Returns a uniform grid of points in the unit square.

    Args:
        points_per_side: points along each side; the grid has ``points_per_side**2`` points.

    Returns:
        `(d, 2)` float64 array of (x, y) in ``[0, 1]``, row-major (x varies fastest).
    """
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be at least 1, got {points_per_side}")
    offset = 1.0 / (2 * points_per_side)
    side = np.linspace(offset, 1.0 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def grid_points_for_image(points_per_side: int, height: int, width: int) -> np.ndarray:
    """Returns the grid scaled to an image, in pixel coordinates.

    Args:
        points_per_side: points along each side.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        `(d, 2)` float64 array of (x, y) pixel coordinates.
    """
    return point_grid(points_per_side) * np.array([width, height], dtype=np.float64)


PromptKind = Literal["grid", "boxes", "points"]
PROMPT_KINDS: tuple[str, ...] = ("grid", "boxes", "points")
# SAM's masks per prompt: a box is unambiguous (``multimask_output=False``, one mask); points
# keep SAM's three (whole, part, sub-part), as the grid does
MASKS_PER_PROMPT = {"grid": 3, "boxes": 1, "points": 3}


@dataclass(frozen=True, eq=False)
class PromptSet:
    """One image's prompts taken from a label field, in FiftyOne's relative coordinates.

    Attributes:
        kind: ``boxes`` (from a ``fo.Detections`` field) or ``points`` (``fo.Keypoints``).
        ids: ``n`` label ids, one per prompt, in prompt order.
        coords: per prompt, `(4,)` relative ``[x, y, width, height]`` (boxes) or `(k, 2)`
            relative ``(x, y)`` positive points (points; a label with several points is one
            prompt of several points). Already clipped to the image and non-empty.
    """

    kind: str
    ids: tuple[str, ...]
    coords: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if self.kind not in ("boxes", "points"):
            raise ValueError(f"a prompt set holds boxes or points, not {self.kind!r}")
        if len(self.ids) != len(self.coords):
            raise ValueError(f"{len(self.ids)} prompt ids for {len(self.coords)} prompts")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def masks_per_prompt(self) -> int:
        """SAM masks kept per prompt (1 for a box, 3 for points)."""
        return MASKS_PER_PROMPT[self.kind]

    def pixel_boxes(self, height: int, width: int) -> np.ndarray:
        """`(n, 4)` float64 boxes ``(x0, y0, x1, y1)`` in pixels, as SAM takes them."""
        scale = np.array([width, height, width, height], dtype=np.float64)
        xywh = np.array(self.coords, dtype=np.float64).reshape(-1, 4)
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * scale

    def pixel_points(self, height: int, width: int) -> list[np.ndarray]:
        """Per prompt, its `(k, 2)` float64 points ``(x, y)`` in pixels."""
        scale = np.array([width, height], dtype=np.float64)
        return [np.asarray(c, dtype=np.float64).reshape(-1, 2) * scale for c in self.coords]

    def anchors(self, height: int, width: int) -> np.ndarray:
        """`(n, 2)` float32 one point per prompt in pixels (a box's centre, the points' mean):
        what a store keeps as the prompts' ``points``."""
        if self.kind == "boxes":
            boxes = self.pixel_boxes(height, width)
            return ((boxes[:, :2] + boxes[:, 2:]) / 2).astype(np.float32)
        points = self.pixel_points(height, width)
        return np.array([p.mean(axis=0) for p in points], dtype=np.float32).reshape(-1, 2)

    def fingerprint(self) -> str:
        """SHA-256 of the prompts (kind, ids, coordinates to 1e-6): a changed box, point or
        prompt list changes it, so its sample is embedded again."""
        described = {
            "kind": self.kind,
            "ids": list(self.ids),
            "coords": [
                np.round(np.asarray(c, np.float64), 6).ravel().tolist() for c in self.coords
            ],
        }
        return hashlib.sha256(json.dumps(described).encode()).hexdigest()

    def to_item(self) -> dict[str, Any]:
        """A JSON-able dict (what travels in a work item to a worker)."""
        return {
            "kind": self.kind,
            "ids": list(self.ids),
            "coords": [np.asarray(c, np.float64).tolist() for c in self.coords],
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> PromptSet:
        """The set `to_item` described."""
        coords = tuple(np.asarray(c, dtype=np.float64) for c in item["coords"])
        return cls(str(item["kind"]), tuple(str(i) for i in item["ids"]), coords)
