"""``usam generate`` through click, as a user runs it (with the tiny pipeline as --model)."""

import pytest
from click.testing import CliRunner

from fiftyone_usam.cli.generate import generate_command

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture
def usam():
    """The ``usam`` group with ``generate`` in it (added here if not registered yet)."""
    from fiftyone_usam.cli import main

    added = "generate" not in main.commands
    if added:
        main.add_command(generate_command)
    runner = CliRunner()
    yield lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    if added:
        main.commands.pop("generate")


def test_help_lists_the_options(usam):
    result = usam("generate", "--help")
    assert result.exit_code == 0
    for option in (
        "--classes", "--per-class", "--model", "--prompt", "--negative-prompt", "--steps",
        "--guidance", "--scheduler", "--height", "--width", "--batch-size", "--seed",
        "--dataset", "--images-dir", "--device", "--precision", "--attention-slicing",
        "--cpu-offload",
    ):  # fmt: skip
        assert option in result.output
    assert "CompVis/stable-diffusion-v1-4" in result.output


def test_generate_builds_the_dataset_and_resumes(
    usam, tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo

    name = training_datasets()
    args = (
        "generate", "--classes", "person,dog,potted plant", "--per-class", 2,
        "--model", tiny_pipeline_dir, "--prompt", "a photo of a {}", "--steps", 2,
        "--height", 64, "--width", 64, "--batch-size", 4, "--seed", 0, "--dataset", name,
        "--images-dir", tmp_path / "images", "--device", "cpu", "--scheduler", "ddim",
    )  # fmt: skip
    first = usam(*args)
    assert first.exit_code == 0, first.output
    assert "6 generated, 0 already in the dataset, of 6 images" in first.output
    dataset = fo.load_dataset(name)
    assert dataset.count_values("ground_truth.label") == {"person": 2, "dog": 2, "potted plant": 2}
    assert set(dataset.values("scheduler")) == {"DDIMScheduler"}
    second = usam(*args)
    assert second.exit_code == 0 and "0 generated, 6 already in the dataset" in second.output


def test_errors_are_one_clean_line(usam, training_datasets, tmp_path):
    name = training_datasets()
    offline = usam("generate", "--classes", "dog", "--dataset", name, "--per-class", 1)
    assert offline.exit_code == 1
    assert "Error: cannot load the text-to-image model 'CompVis/stable-diffusion-v1-4'" in (
        offline.output
    )
    assert "--model" in offline.output and "Traceback" not in offline.output
    duplicate = usam("generate", "--classes", "dog,cat,dog", "--dataset", name)
    assert duplicate.exit_code == 1 and "listed twice" in duplicate.output
    bad_prompt = usam("generate", "--classes", "dog", "--dataset", name, "--prompt", "a dog")
    assert bad_prompt.exit_code == 1 and "needs a {} for the class name" in bad_prompt.output
