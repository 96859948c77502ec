import copy
import json

import pytest
import torch

from fiftyone_usam.embeddings.fast_attention import (
    resolve_attention,
    sdpa_attention,
    sdpa_forward,
)
from fiftyone_usam.embeddings.sam_backend import (
    LoadedSam,
    build_sam,
    describe_state_dict,
    load_sam,
    weights_sha256,
)
from fiftyone_usam.embeddings.sam_checkpoints import file_sha256
from fiftyone_usam.errors import CheckpointError
from fiftyone_usam.testing.sam import TINY_SAM_CONFIG as TINY_CONFIG


def test_load_from_checkpoint_with_config_beside_it(tiny_checkpoint, tiny_sam):
    loaded = load_sam(None, tiny_checkpoint, device="cpu")
    assert isinstance(loaded, LoadedSam)
    assert loaded.variant == "tiny" and loaded.image_size == 256
    assert loaded.file_sha256 == file_sha256(tiny_checkpoint)
    # the identity is the weights' content: the same as for the same weights built in memory
    assert loaded.checkpoint_sha256 == load_sam(tiny_sam, device="cpu").checkpoint_sha256
    assert loaded.same_weights(file_sha256(tiny_checkpoint))
    for name, tensor in tiny_sam.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert not loaded.model.training


def test_safetensors_checkpoints_load(tiny_sam, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sam.state_dict().items()}, str(path))
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    loaded = load_sam("tiny", path, device="cpu")
    assert weights_sha256(loaded.model) == weights_sha256(tiny_sam)


def test_a_built_model_is_accepted_and_fingerprinted(tiny_sam):
    loaded = load_sam(tiny_sam, device="cpu")
    assert loaded.model is tiny_sam
    assert loaded.checkpoint_sha256 == "state:" + weights_sha256(tiny_sam)
    assert loaded.variant.startswith("custom_w64_d2_s256")
    assert load_sam(loaded, device="cpu").checkpoint_sha256 == loaded.checkpoint_sha256


def test_fingerprint_changes_with_the_weights(tiny_variant):
    torch.manual_seed(1)
    a = build_sam(tiny_variant)
    torch.manual_seed(2)
    b = build_sam(tiny_variant)
    assert weights_sha256(a) != weights_sha256(b)


def test_checkpoint_of_another_architecture_is_explained(tiny_checkpoint, tmp_path):
    config = {**TINY_CONFIG, "name": "wider", "encoder_embed_dim": 128}
    target = tmp_path / "wider.pth"
    target.write_bytes(tiny_checkpoint.read_bytes())
    (tmp_path / "wider.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"does not fit SAM variant 'wider'.*holds an encoder of width 64, depth 2, "
        r"embedding grid 16x16",
    ):
        load_sam(None, target, device="cpu")


def test_corrupt_checkpoint_file_is_explained(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"\x00not a checkpoint")
    (tmp_path / "broken.json").write_text(json.dumps(TINY_CONFIG))
    with pytest.raises(CheckpointError, match=r"cannot read SAM checkpoint"):
        load_sam(None, path, device="cpu")


def test_describe_recognises_official_shapes():
    state = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    assert describe_state_dict(state).endswith("(vit_b)")
    assert describe_state_dict({}) == "no SAM image encoder weights"


def test_cuda_without_cuda_is_a_clear_error(tiny_sam):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from fiftyone_usam.errors import ConfigError

    with pytest.raises(ConfigError, match=r"CUDA is not available: use --device cpu"):
        load_sam(tiny_sam, device="cuda")


# -- SDPA attention for the image encoder (fast_attention) -----------------------------------


def _with_relative_positions(sam):
    """A copy whose relative-position tables are not zero (random weights start at zero)."""
    sam = copy.deepcopy(sam)
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if "rel_pos" in name:
                param.normal_(0.0, 0.5)
    return sam


def test_sdpa_attention_equals_the_reference_on_a_non_square_grid():
    from segment_anything.modeling.image_encoder import Attention

    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, use_rel_pos=True, input_size=(3, 5)).eval()
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
        x = torch.randn(2, 3, 5, 16)
        torch.testing.assert_close(sdpa_forward(attn, x), attn(x), atol=1e-5, rtol=1e-5)


def test_sdpa_encoder_equals_the_reference_in_fp32(tiny_sam):
    sam = _with_relative_positions(tiny_sam)
    x = torch.randn(2, 3, 256, 256) * 50
    with torch.inference_mode():
        reference = sam.image_encoder(x)
        with sdpa_attention(sam.image_encoder) as switched:
            fast = sam.image_encoder(x)
        assert switched == 2  # one Attention per block
        # fp32: equal within float rounding (measured 2e-6 of outputs up to 4.5)
        assert (fast - reference).abs().max() <= 1e-5 * reference.abs().max()
        assert torch.equal(sam.image_encoder(x), reference)  # the reference is back


def test_sdpa_encoder_runs_under_bf16_autocast(tiny_sam):
    sam = _with_relative_positions(tiny_sam)
    x = torch.randn(1, 3, 256, 256) * 50
    with torch.inference_mode():
        full = sam.image_encoder(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference = sam.image_encoder(x).float()
            with sdpa_attention(sam.image_encoder):
                fast = sam.image_encoder(x).float()
    # bf16 has 8 bits of mantissa: SDPA is as far from fp32 as the bf16 reference is
    scale = full.abs().max()
    assert (fast - full).abs().max() <= 0.05 * scale
    assert (fast - reference).abs().max() <= 0.05 * scale


def test_sdpa_attention_is_undone_on_error(tiny_sam):
    encoder = copy.deepcopy(tiny_sam).image_encoder
    with pytest.raises(RuntimeError, match="inside"), sdpa_attention(encoder):
        assert all("forward" in b.attn.__dict__ for b in encoder.blocks)
        raise RuntimeError("inside")
    assert all("forward" not in b.attn.__dict__ for b in encoder.blocks)


def test_auto_attention_is_sdpa_on_cuda_only():
    assert resolve_attention("auto", torch.device("cuda")) == "sdpa"
    assert resolve_attention("auto", torch.device("cpu")) == "reference"
    assert resolve_attention("sdpa", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match=r"encoder_attention must be one of reference, sdpa"):
        resolve_attention("flash", torch.device("cpu"))  # type: ignore[arg-type]
