"""A tiny CLIP with random weights, saved where ``--clip-model DIR`` loads it.

Built from transformers' own classes (``CLIPModel`` from a tiny ``CLIPConfig``: width 32, 2
layers, 32x32 input, 16-d projection) with the byte-level tokenizer written locally, so no model
hub is needed; it loads through the same code path as a hub id (``from_pretrained``).
"""

from __future__ import annotations

from pathlib import Path

from fiftyone_usam.testing.pipelines import byte_level_tokenizer

_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}


def save_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Saves a tiny random ``CLIPModel`` and its ``CLIPProcessor`` in ``folder``.

    The weights are drawn after ``torch.manual_seed(seed)``; torch's global RNG is restored.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = byte_level_tokenizer()
    config = CLIPConfig(
        text_config={
            **_TOWER,
            "num_hidden_layers": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**_TOWER, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIPModel(config).eval()
    finally:
        torch.random.set_rng_state(state)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
