"""The registry of SAM variants: the three official ones and any described by a config file.

A variant is the architecture of SAM's image encoder (the prompt encoder and mask decoder are the
same in every SAM, so the mask tokens are always 4x256) plus where its official checkpoint lives.
A custom build, or a tiny SAM for tests, is described by a small JSON or YAML file beside its
checkpoint (``tiny_sam.pth`` -> ``tiny_sam.json``)::

    {"name": "tiny", "encoder_embed_dim": 64, "encoder_depth": 2, "encoder_num_heads": 2,
     "encoder_global_attn_indexes": [1], "image_size": 256}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from fiftyone_usam.config import load_config
from fiftyone_usam.errors import ConfigError, UnknownVariantError

_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class SamVariant:
    """A SAM architecture, and where its official checkpoint can be fetched.

    Attributes:
        name: the registry key, e.g. ``"vit_b"``.
        encoder_embed_dim: ViT width.
        encoder_depth: number of ViT blocks.
        encoder_num_heads: attention heads per block.
        encoder_global_attn_indexes: blocks with global (not windowed) attention.
        image_size: encoder input size; images are resized so their long side has this length.
        patch_size: ViT patch size; the image embedding is ``image_size // patch_size`` wide.
        window_size: windowed-attention size.
        checkpoint_url: official download address, if any.
        checkpoint_sha256: SHA-256 of the official checkpoint, checked after download.
        checkpoint_filename: file name of the official checkpoint (as in FiftyOne's model zoo).
        checkpoint_bytes: size of the official checkpoint, for messages.
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    checkpoint_url: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_filename: str | None = None
    checkpoint_bytes: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append("encoder_embed_dim must be divisible by encoder_num_heads")
        if self.image_size % self.patch_size:
            problems.append("image_size must be divisible by patch_size")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            problems.append(
                f"encoder_global_attn_indexes {bad} outside 0..{self.encoder_depth - 1}"
            )
        if problems:
            raise ConfigError(f"SAM variant {self.name!r}: " + "; ".join(problems))


def _official(
    name: str,
    width: int,
    depth: int,
    heads: int,
    glob: tuple[int, ...],
    file: str,
    sha256: str,
    size: int,
) -> SamVariant:
    return SamVariant(
        name,
        width,
        depth,
        heads,
        glob,
        checkpoint_url=_URL + file,
        checkpoint_sha256=sha256,
        checkpoint_filename=file,
        checkpoint_bytes=size,
    )


OFFICIAL_VARIANTS: dict[str, SamVariant] = {
    "vit_b": _official(
        "vit_b",
        768,
        12,
        12,
        (2, 5, 8, 11),
        "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383,
    ),
    "vit_l": _official(
        "vit_l",
        1024,
        24,
        16,
        (5, 11, 17, 23),
        "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607,
    ),
    "vit_h": _official(
        "vit_h",
        1280,
        32,
        16,
        (7, 15, 23, 31),
        "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879,
    ),
}

DEFAULT_VARIANT = "vit_b"

_REGISTRY: dict[str, SamVariant] = dict(OFFICIAL_VARIANTS)


def register_variant(variant: SamVariant, *, replace: bool = False) -> None:
    """Adds a variant to the registry so it can be named like ``vit_b``."""
    if variant.name in _REGISTRY and not replace:
        raise ConfigError(f"a SAM variant named {variant.name!r} is already registered")
    _REGISTRY[variant.name] = variant


def registered_variants() -> list[str]:
    """Names of the registered variants, official ones first."""
    return list(_REGISTRY)


def variant_config_path(checkpoint: str | Path) -> Path:
    """The config file that describes a custom checkpoint's variant (same stem, ``.json``)."""
    return Path(checkpoint).with_suffix(".json")


def load_variant_config(path: str | Path) -> SamVariant:
    """Reads a variant from a JSON or YAML file (unknown keys are errors)."""
    return load_config(SamVariant, path)


def resolve_variant(sam: str | Path | None, checkpoint: str | Path | None = None) -> SamVariant:
    """Finds the variant meant by a name, a config file, or a checkpoint with a config beside it.

    Args:
        sam: a registered name (``vit_b``, ``vit_l``, ``vit_h``), a path to a variant config
            file, or None: the variant described beside ``checkpoint`` if there is one, else
            ``vit_b``.
        checkpoint: a checkpoint path; a ``<stem>.json`` beside it describes a custom variant.

    Raises:
        UnknownVariantError: nothing describes the variant; the message lists what does.
        ConfigError: the config file is invalid, or names another variant than ``sam``.
    """
    beside = variant_config_path(checkpoint) if checkpoint is not None else None
    if sam is not None and Path(str(sam)).suffix.lower() in (".json", ".yaml", ".yml"):
        return load_variant_config(sam)
    if beside is not None and beside.is_file():
        variant = load_variant_config(beside)
        if sam is not None and str(sam) != variant.name:
            raise ConfigError(
                f"--sam {sam} was asked for, but {beside} describes the checkpoint as variant "
                f"{variant.name!r}; pass --sam {variant.name}, leave --sam out, or fix the file"
            )
        return variant
    name = DEFAULT_VARIANT if sam is None else str(sam)
    if name in _REGISTRY:
        return _REGISTRY[name]
    known = ", ".join(registered_variants())
    hint = (
        f" or describe it in {beside}"
        if beside is not None
        else " or pass --checkpoint PATH with a <checkpoint-stem>.json beside it"
    )
    raise UnknownVariantError(
        f"unknown SAM variant {name!r}: use one of {known}{hint} "
        f"(fields: {', '.join(f.name for f in dataclasses.fields(SamVariant)[:6])})"
    )
