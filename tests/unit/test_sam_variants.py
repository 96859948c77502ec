import json

import pytest

from fiftyone_usam.embeddings.sam_variants import (
    OFFICIAL_VARIANTS,
    SamVariant,
    register_variant,
    registered_variants,
    resolve_variant,
)
from fiftyone_usam.errors import ConfigError, UnknownVariantError
from fiftyone_usam.testing.sam import TINY_SAM_CONFIG as TINY_CONFIG


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_variants_build_exactly_segment_anythings_models(name):
    """Same parameter names and shapes as segment_anything's own builder (built on 'meta')."""
    import torch
    from segment_anything import sam_model_registry

    from fiftyone_usam.embeddings.sam_backend import build_sam

    with torch.device("meta"):
        theirs = sam_model_registry[name]().state_dict()
        ours = build_sam(OFFICIAL_VARIANTS[name]).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    variant = OFFICIAL_VARIANTS[name]
    assert variant.checkpoint_url.endswith(variant.checkpoint_filename)
    assert len(variant.checkpoint_sha256) == 64
    assert registered_variants()[:3] == ["vit_b", "vit_l", "vit_h"]


def test_names_resolve_to_official_variants():
    assert resolve_variant("vit_h") is OFFICIAL_VARIANTS["vit_h"]
    assert resolve_variant(None) is OFFICIAL_VARIANTS["vit_b"]  # the default
    assert resolve_variant(None, "/no/config/beside.pth") is OFFICIAL_VARIANTS["vit_b"]


def test_config_beside_checkpoint_describes_a_custom_variant(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps(TINY_CONFIG))
    variant = resolve_variant(None, tmp_path / "mine.pth")
    assert variant.name == "tiny" and variant.image_size == 256
    assert variant.encoder_global_attn_indexes == (1,)
    assert resolve_variant("tiny", tmp_path / "mine.pth") == variant


def test_config_file_can_be_named_directly(tmp_path):
    (tmp_path / "v.yaml").write_text(
        "name: small\nencoder_embed_dim: 96\nencoder_depth: 3\nencoder_num_heads: 3\n"
        "encoder_global_attn_indexes: [2]\nimage_size: 512\n"
    )
    assert resolve_variant(str(tmp_path / "v.yaml")).encoder_embed_dim == 96


def test_name_that_contradicts_the_config_is_an_error(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps(TINY_CONFIG))
    with pytest.raises(ConfigError, match=r"describes the checkpoint as variant 'tiny'"):
        resolve_variant("vit_b", tmp_path / "mine.pth")


def test_unknown_variant_lists_the_known_ones(tmp_path):
    with pytest.raises(
        UnknownVariantError, match=r"unknown SAM variant 'vit_x': use one of vit_b, vit_l, vit_h"
    ):
        resolve_variant("vit_x")
    with pytest.raises(UnknownVariantError, match=r"mine.json"):
        resolve_variant("vit_x", tmp_path / "mine.pth")


def test_invalid_custom_configs_are_errors(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({**TINY_CONFIG, "encoder_widht": 3}))
    with pytest.raises(ConfigError, match=r"unknown setting"):
        resolve_variant(None, tmp_path / "a.pth")
    with pytest.raises(ConfigError, match=r"encoder_global_attn_indexes \[5\] outside 0..1"):
        SamVariant("bad", 64, 2, 2, (5,))
    with pytest.raises(ConfigError, match=r"divisible by encoder_num_heads"):
        SamVariant("bad", 65, 2, 2, (1,))


def test_register_variant():
    variant = SamVariant("registered_for_test", 64, 2, 2, (1,), image_size=256)
    register_variant(variant)
    assert resolve_variant("registered_for_test") is variant
    with pytest.raises(ConfigError, match=r"already registered"):
        register_variant(variant)
