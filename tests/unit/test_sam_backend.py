import json

import pytest
import torch

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
