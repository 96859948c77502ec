"""Stable Diffusion pipelines with random weights, for tests and speed measurements.

Speed does not depend on the weights' values, and no weights can be downloaded where the tests
run, so both build the real diffusers and transformers classes from configs: ``tiny`` (a few
hundred thousand parameters, 64x64 images, for tests) and ``sd-v1`` (the architecture of Stable
Diffusion v1.x at 512x512: an 860M-parameter UNet, its VAE and a CLIP ViT-L/14 text encoder).
The tokenizer is byte-level (every prompt still tokenises, into one token per character).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

PipelineSize = Literal["tiny", "sd-v1"]

_TINY: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 32,
        "norm_num_groups": 32,
        "attention_head_dim": 2,
    },
    "vae": {
        "block_out_channels": (32, 64),
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 2,
        "up_block_types": ("UpDecoderBlock2D",) * 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 64,
    },
    "text": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "projection_dim": 32,
    },
}

_SD_V1: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    "vae": {
        "block_out_channels": (128, 256, 512, 512),
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "latent_channels": 4,
        "layers_per_block": 2,
        "sample_size": 512,
    },
    "text": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    },
}

# Stable Diffusion v1.x's scheduler settings.
_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
}


def build_random_pipeline(size: PipelineSize = "tiny", seed: int = 0) -> Any:
    """A ``StableDiffusionPipeline`` with random weights (no safety checker), on the CPU.

    Args:
        size: ``tiny`` (64x64 output) or ``sd-v1`` (Stable Diffusion v1.x size, 512x512).
        seed: torch seed for the weights.

    Returns:
        The pipeline; ``save_pretrained(dir)`` writes it where ``--model dir`` loads it.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = {"tiny": _TINY, "sd-v1": _SD_V1}[size]
    tokenizer = byte_level_tokenizer()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **configs["text"],
                vocab_size=len(tokenizer),
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    finally:
        torch.random.set_rng_state(generator_state)
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(**_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def byte_level_tokenizer() -> Any:
    """A CLIP tokenizer with a 514-token byte-level vocabulary and no merges (77 tokens long)."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    # transformers 5 ignores vocab_file/merges_file here: the vocabulary goes in as a dict.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _byte_chars() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def save_random_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random Stable Diffusion pipeline saved in ``folder`` (reused when it is there)."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    build_random_pipeline("tiny", seed=seed).save_pretrained(folder)
    return folder
