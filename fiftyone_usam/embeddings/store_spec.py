"""`StoreSpec`: what an EmbeddingStore's arrays were computed with (its ``spec.json``).

Two stores are compatible iff their specs are equal; `StoreSpec.differences` is how every
mismatch message names what differs. Torch-free, so the App's forms can check a store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.embeddings.prompts import MASKS_PER_PROMPT
from fiftyone_usam.embeddings.proposals import MASKS_PER_POINT
from fiftyone_usam.embeddings.shards import FORMAT_VERSION

MASK_FORMAT = "coco_rle"  # the masks of a store that keeps them
NO_MASKS = "none"  # the mask_format of a store embedded with masks="none"


@dataclass(frozen=True)
class StoreSpec:
    """What an EmbeddingStore's arrays were computed with; two stores are compatible iff equal.

    Attributes:
        sam_variant: SAM variant name.
        checkpoint_sha256: SHA-256 of the SAM weights.
        points_per_side: prompt grid size; ``d = points_per_side**2``.
        encoder_input_size: SAM image encoder input size.
        embedding_dim: length of a mask embedding (4 mask tokens x 256).
        embedding_dtype: dtype of the stored embeddings.
        masks_per_point: SAM multimask outputs per point.
        mask_format: ``coco_rle``, or ``none``: embeddings only (enough to train, not to label).
        stability_offset: logit offset of the stability scores.
        prompt_kind: what prompted SAM: ``grid`` (the ``points_per_side`` grid), or a label
            field's ``boxes`` (``fo.Detections``) or ``points`` (``fo.Keypoints``); such a
            store has a varying number of prompts per image, each named by its label's id.
        prompt_field: the label field of ``boxes`` or ``points``; None for the grid.
        view: for a view store, the augmentation its images were embedded under (``hflip``,
            ``scale:0.75``; `embeddings.views`), row ``i`` at the image location of the
            original's grid point ``i``; empty for the images as they are.
        format_version: on-disk layout version.
    """

    sam_variant: str
    checkpoint_sha256: str
    points_per_side: int
    encoder_input_size: int
    embedding_dim: int = 1024
    embedding_dtype: str = "float16"
    masks_per_point: int = MASKS_PER_POINT
    mask_format: str = MASK_FORMAT
    stability_offset: float = 1.0
    prompt_kind: str = "grid"
    prompt_field: str | None = None
    view: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def num_points(self) -> int:
        """``d``, prompts (and embeddings) per image; 0 for prompts from a field, whose number
        differs from image to image."""
        return self.points_per_side**2 if self.on_grid else 0

    @property
    def on_grid(self) -> bool:
        """Whether SAM was prompted with the point grid (not a label field's prompts)."""
        return self.prompt_kind == "grid"

    def with_prompts(self, kind: str, field: str) -> StoreSpec:
        """This spec for a store of ``kind`` prompts (``boxes``, ``points``) from ``field``."""
        if kind not in MASKS_PER_PROMPT or kind == "grid":
            raise ValueError(f"prompts from a field are boxes or points, not {kind!r}")
        return replace(
            self,
            points_per_side=0,
            prompt_kind=kind,
            prompt_field=field,
            masks_per_point=MASKS_PER_PROMPT[kind],
        )

    @property
    def has_masks(self) -> bool:
        """Whether the store keeps SAM's masks (labelling needs them; training does not)."""
        return self.mask_format != NO_MASKS

    def with_masks(self, masks: bool) -> StoreSpec:
        """This spec for a store that keeps the masks (``True``) or only the embeddings."""
        return replace(self, mask_format=MASK_FORMAT if masks else NO_MASKS)

    def with_view(self, view: str) -> StoreSpec:
        """This (grid) spec for the store of a ``view`` of its images: embeddings only."""
        return replace(self, view=view, mask_format=NO_MASKS)

    def differences(
        self,
        other: StoreSpec,
        fields: Iterable[str] | None = None,
        labels: tuple[str, str] = ("this", "other"),
    ) -> list[str]:
        """``"<field>: <label 0> <self's value>, <label 1> <other's value>"`` per differing field.

        The one place that says how two specs differ, for every message that refuses a mismatch.

        Args:
            other: the spec to compare with.
            fields: the fields compared; default: all of them.
            labels: what to call the two sides, e.g. ``("store has", "asked for")``.
        """
        mine, theirs = config_to_dict(self), config_to_dict(other)
        names = list(mine) if fields is None else list(fields)
        return [
            f"{n}: {labels[0]} {mine[n]!r}, {labels[1]} {theirs[n]!r}"
            for n in names
            if mine[n] != theirs[n]
        ]

    def describe(self) -> str:
        """One line for messages."""
        prompts = (
            f"{self.points_per_side}x{self.points_per_side} points"
            if self.on_grid
            else f"the {self.prompt_kind} of field {self.prompt_field!r}"
        )
        return (
            f"SAM {self.sam_variant} (weights {self.checkpoint_sha256[:12]}), {prompts}, "
            f"input {self.encoder_input_size}, "
            f"{self.embedding_dim}-d {self.embedding_dtype}, format v{self.format_version}"
            + ("" if self.has_masks else ", no masks")
            + (f", view {self.view}" if self.view else "")
        )
