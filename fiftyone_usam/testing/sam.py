"""A tiny SAM with random weights, built from segment_anything's own modules.

The decoder keeps SAM's 256-d width, so the mask tokens are the real 4 x 256 = 1024-d
embeddings; the encoder is small (width 64, depth 2, input 256: a 16x16 image embedding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.embeddings.sam_backend import build_sam
from fiftyone_usam.embeddings.sam_variants import SamVariant
from fiftyone_usam.files import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

TINY_SAM_CONFIG: dict[str, Any] = {
    "name": "tiny",
    "encoder_embed_dim": 64,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "image_size": 256,
    "window_size": 8,
}


def tiny_variant(name: str = "tiny") -> SamVariant:
    """The tiny SAM's variant, under ``name``."""
    config = {**TINY_SAM_CONFIG, "name": name}
    config["encoder_global_attn_indexes"] = tuple(config["encoder_global_attn_indexes"])
    return SamVariant(**config)


def build_tiny_sam(seed: int = 0, name: str = "tiny") -> Sam:
    """A tiny SAM with random weights drawn after ``torch.manual_seed(seed)``."""
    import torch

    torch.manual_seed(seed)
    return build_sam(tiny_variant(name))


def save_tiny_sam(
    folder: str | Path, stem: str = "tiny_sam", *, seed: int = 0, name: str = "tiny"
) -> Path:
    """Saves a tiny SAM as ``<stem>.pth`` with its variant described by ``<stem>.json`` beside
    it (how `load_sam` finds a custom variant); reuses both when they exist.

    Returns:
        The checkpoint path.
    """
    import torch

    folder = Path(folder)
    path, config = folder / f"{stem}.pth", folder / f"{stem}.json"
    if path.is_file() and config.is_file():
        return path
    write_text_atomic(config, json.dumps({**TINY_SAM_CONFIG, "name": name}, indent=2))
    with atomic_path(path) as tmp:
        torch.save(build_tiny_sam(seed, name).state_dict(), tmp)
    return path
