"""Loading pipelines: local directories, hub ids offline, schedulers, the random builders."""

import pytest

from fiftyone_usam.errors import CheckpointError, ConfigError
from fiftyone_usam.sources.pipelines import DEFAULT_MODEL, SCHEDULERS, model_name, set_scheduler


@pytest.fixture(scope="module")
def tiny_pipe():
    from fiftyone_usam.testing.pipelines import build_random_pipeline

    return build_random_pipeline("tiny")


def test_the_byte_level_tokenizer_tokenises_prompts():
    from fiftyone_usam.testing.pipelines import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    assert len(tokenizer) == 514 and tokenizer.model_max_length == 77
    ids = tokenizer("a dog", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 512 and 513 in ids and len(set(ids[:6])) > 3


def test_every_scheduler_name_builds(tiny_pipe):
    for name, class_name in SCHEDULERS.items():
        used = set_scheduler(tiny_pipe, name)
        assert class_name is None or used == class_name
    with pytest.raises(ConfigError, match="unknown scheduler"):
        set_scheduler(tiny_pipe, "nope")


def test_local_directories_and_hub_ids(tmp_path, tiny_pipeline_dir):
    import torch

    from fiftyone_usam.sources.pipelines import load_pipeline

    cpu = {"device": torch.device("cpu"), "dtype": torch.float32}
    pipe = load_pipeline(tiny_pipeline_dir, **cpu)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and len(pipe.tokenizer) == 514
    with pytest.raises(CheckpointError, match=r"no model_index\.json"):
        load_pipeline(tmp_path, **cpu)
    with pytest.raises(CheckpointError, match="is a file"):
        load_pipeline(tiny_pipeline_dir / "model_index.json", **cpu)
    for missing in (tmp_path / "none", "./none", "~/none", "a/b/c"):
        with pytest.raises(CheckpointError, match="no pipeline directory"):
            load_pipeline(missing, **cpu)
    with pytest.raises(CheckpointError) as offline:
        load_pipeline(DEFAULT_MODEL, **cpu)  # HF_HUB_OFFLINE=1 in the tests
    message = str(offline.value)
    assert "huggingface-cli download CompVis/stable-diffusion-v1-4 --local-dir" in message
    assert "save_pretrained" in message and "--model" in message


def test_cpu_offload_is_for_gpus(tiny_pipeline_dir):
    import torch

    from fiftyone_usam.sources.pipelines import load_pipeline

    with pytest.raises(ConfigError, match="needs --device cuda"):
        load_pipeline(
            tiny_pipeline_dir, device=torch.device("cpu"), dtype=torch.float32, cpu_offload=True
        )


def test_model_names_record_local_directories_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    assert model_name("weights") == str(tmp_path / "weights")
    assert model_name(DEFAULT_MODEL) == DEFAULT_MODEL
