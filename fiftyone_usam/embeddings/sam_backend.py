"""Building and loading SAM. The only module that imports ``segment_anything``.

`load_sam` accepts a registered variant name, a variant config file, a checkpoint with a config
beside it, or an already-built ``segment_anything.modeling.Sam``; it returns a `LoadedSam` that
carries the model with what the EmbeddingStore spec needs to know about it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.devices import resolve_device
from fiftyone_usam.embeddings.sam_checkpoints import (
    file_sha256,
    known_content_hash,
    remember_content_hash,
    resolve_checkpoint,
)
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS, SamVariant, resolve_variant
from fiftyone_usam.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

PROMPT_DIM = 256  # SAM's prompt/decoder width: 4 mask tokens x 256 = the 1024-d embedding


@dataclass(frozen=True)
class LoadedSam:
    """A SAM model in eval mode on its device, and its identity.

    Attributes:
        model: the ``segment_anything.modeling.Sam``.
        variant: the variant name (``vit_b``, ..., or a custom name).
        checkpoint_sha256: the weights' identity, ``state:<SHA-256 of the state dict>``: the
            same for the same weights whether they came from a file or a built model.
        file_sha256: SHA-256 of the checkpoint file it was loaded from (None for a built model);
            stores and heads made by earlier versions recorded this.
        checkpoint: the checkpoint file's resolved path, if any.
        variant_config: the variant's settings, so a custom SAM can be rebuilt from a record.
    """

    model: Sam
    variant: str
    checkpoint_sha256: str
    file_sha256: str | None = None
    checkpoint: str | None = None
    variant_config: dict[str, Any] | None = None

    def same_weights(self, sha256: str) -> bool:
        """Whether a recorded weights hash (content or file) is this SAM's."""
        return sha256 in (self.checkpoint_sha256, self.file_sha256)

    @property
    def image_size(self) -> int:
        """The encoder's input size (long side of the resized image)."""
        return int(self.model.image_encoder.img_size)


def build_sam(variant: SamVariant) -> Sam:
    """Builds an untrained SAM of ``variant``'s architecture from segment_anything's modules."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    grid = variant.image_size // variant.patch_size
    encoder = ImageEncoderViT(
        depth=variant.encoder_depth,
        embed_dim=variant.encoder_embed_dim,
        img_size=variant.image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=variant.encoder_num_heads,
        patch_size=variant.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=variant.encoder_global_attn_indexes,
        window_size=variant.window_size,
        out_chans=PROMPT_DIM,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=PROMPT_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=PROMPT_DIM,
        image_embedding_size=(grid, grid),
        input_image_size=(variant.image_size, variant.image_size),
        mask_in_chans=16,
    )
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_sam(
    sam: str | Path | Sam | LoadedSam | SamVariant | None = None,
    checkpoint: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> LoadedSam:
    """Loads SAM for embedding.

    Args:
        sam: a variant name (``vit_b``, ``vit_l``, ``vit_h`` or a registered custom name), a
            variant config file, a `SamVariant`, a built model, or None: the variant described
            beside ``checkpoint`` if any, else ``vit_b``.
        checkpoint: the weights (``.pth`` state dict or ``.safetensors``); by default the
            official checkpoint is found in the cache or FiftyOne's zoo, or downloaded.
        device: where to put the model. Default: a built model stays where it is; one loaded
            from a checkpoint goes to CUDA if available, else the CPU.
        cache_dir: cache root for downloaded checkpoints.
        download: allow downloading the official checkpoint.

    Raises:
        UnknownVariantError, CheckpointError, ConfigError: with what to do about it.
    """
    if isinstance(sam, LoadedSam):
        model = sam.model if device is None else sam.model.to(resolve_device(device))
        return replace(sam, model=model.eval())
    if _is_module(sam):
        model = (sam if device is None else sam.to(resolve_device(device))).eval()
        _check_decoder(model)
        return LoadedSam(model, _guess_variant_name(model), "state:" + weights_sha256(model))
    target = resolve_device(device)
    variant = sam if isinstance(sam, SamVariant) else resolve_variant(sam, checkpoint)
    path = resolve_checkpoint(variant, checkpoint, cache_dir=cache_dir, download=download)
    model = build_sam(variant)
    _load_weights(model, path, variant)
    file_sha = file_sha256(path)
    content = known_content_hash(file_sha)
    if content is None:  # hashed once per file: the next load reads it from the cache
        content = "state:" + weights_sha256(model)
        remember_content_hash(file_sha, content)
    return LoadedSam(
        model.to(target).eval(),
        variant.name,
        content,
        file_sha256=file_sha,
        checkpoint=str(path.resolve()),
        variant_config=config_to_dict(variant),
    )


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state dict (names and values, in order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def resize_image(image: np.ndarray, target_length: int) -> np.ndarray:
    """Resizes an `(H, W, 3)` uint8 image to long side ``target_length``, as SamPredictor does."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide(target_length).apply_image(image)


def resized_shape(height: int, width: int, target_length: int) -> tuple[int, int]:
    """The `(H, W)` an image of this size has after `resize_image`."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide.get_preprocess_shape(height, width, target_length)


def transform_coords(
    coords: np.ndarray, original_size: tuple[int, int], target_length: int
) -> np.ndarray:
    """Maps `(N, 2)` pixel (x, y) coordinates of the original image into the resized frame."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide(target_length).apply_coords(coords, original_size)


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """SAM's stability score, the IoU of the masks at ``threshold +- offset``.

    Args:
        logits: `(..., H, W)` mask logits.

    Returns:
        `(...)` float scores in [0, 1].
    """
    from segment_anything.utils.amg import calculate_stability_score

    return calculate_stability_score(logits, threshold, offset)


def _is_module(obj: Any) -> TypeGuard[torch.nn.Module]:
    import torch

    return isinstance(obj, torch.nn.Module)


def _check_decoder(model: Sam) -> None:
    decoder = model.mask_decoder
    if decoder.transformer_dim != PROMPT_DIM or decoder.num_mask_tokens != 4:
        raise CheckpointError(
            f"this SAM's mask decoder has {decoder.num_mask_tokens} mask tokens of width "
            f"{decoder.transformer_dim}; U-SAM needs SAM's standard 4 x {PROMPT_DIM}"
        )


def _load_weights(model: Sam, path: Path, variant: SamVariant) -> None:
    state = _read_state_dict(path)
    found = describe_state_dict(state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit SAM variant {variant.name!r} (encoder width "
            f"{variant.encoder_embed_dim}, depth {variant.encoder_depth}, input "
            f"{variant.image_size}): the file holds {found}. Pass the matching --sam, or describe "
            f"the variant in {path.with_suffix('.json')}. ({str(e).splitlines()[0]})"
        ) from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickle with code, truncated file, a text file...
        raise CheckpointError(
            f"cannot read SAM checkpoint {path}: it is not a readable file of SAM weights "
            f"(a PyTorch .pth state dict or .safetensors; {type(e).__name__}: {e}). Pass SAM's "
            "weights file, e.g. sam_vit_b_01ec64.pth"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict of SAM weights")
    return state


def describe_state_dict(state: dict[str, Any]) -> str:
    """A short description of the SAM architecture a state dict holds, for error messages."""
    pos = state.get("image_encoder.pos_embed")
    if pos is None or getattr(pos, "ndim", 0) != 4:
        return "no SAM image encoder weights"
    depth = 1 + max(
        (int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))),
        default=-1,
    )
    width, grid = int(pos.shape[-1]), int(pos.shape[1])
    name = next(
        (
            v.name
            for v in OFFICIAL_VARIANTS.values()
            if (v.encoder_embed_dim, v.encoder_depth) == (width, depth)
        ),
        None,
    )
    guess = f" ({name})" if name else ""
    return f"an encoder of width {width}, depth {depth}, embedding grid {grid}x{grid}{guess}"


def _guess_variant_name(model: Sam) -> str:
    encoder = model.image_encoder
    width, depth = encoder.patch_embed.proj.out_channels, len(encoder.blocks)
    for variant in OFFICIAL_VARIANTS.values():
        if (variant.encoder_embed_dim, variant.encoder_depth, variant.image_size) == (
            width,
            depth,
            encoder.img_size,
        ):
            return variant.name
    return f"custom_w{width}_d{depth}_s{encoder.img_size}"
