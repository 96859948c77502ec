import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fiftyone_usam.cli import main
from fiftyone_usam.embeddings.store import EmbeddingStore


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_help_describes_the_commands(run):
    result = run("--help")
    assert result.exit_code == 0
    assert "U-SAM" in result.output and "embed" in result.output
    result = run("embed", "--help")
    assert result.exit_code == 0
    for option in (
        "--dataset",
        "--view-tag",
        "--sam",
        "--checkpoint",
        "--store",
        "--points-per-side",
        "--device",
        "--batch-size",
    ):
        assert option in result.output


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "fiftyone_usam", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "usam, version" in result.stdout
    usam = Path(sys.executable).parent / "usam"
    script = subprocess.run([str(usam), "--help"], capture_output=True, text=True, timeout=120)
    assert script.returncode == 0 and "embed" in script.stdout


def test_embed_fills_a_store_and_a_second_run_does_no_work(
    run, make_dataset, image_files, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(image_files[:3])
    args = (
        "embed",
        "--dataset",
        dataset.name,
        "--sam",
        "tiny",
        "--checkpoint",
        tiny_checkpoint,
        "--store",
        tmp_path / "s",
        "--points-per-side",
        2,
        "--device",
        "cpu",
        "--batch-size",
        2,
    )
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "3 embedded, 0 already in the store, 0 failed, of 3 samples" in first.output
    assert EmbeddingStore.open(tmp_path / "s").sample_ids() == set(dataset.values("id"))
    second = run(*args)
    assert second.exit_code == 0
    assert "0 embedded, 3 already in the store" in second.output


def test_failures_are_listed_with_sample_ids(
    run, make_dataset, image_files, tiny_checkpoint, tmp_path
):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    dataset = make_dataset([image_files[0], bad])
    result = run(
        "embed",
        "--dataset",
        dataset.name,
        "--sam",
        "tiny",
        "--checkpoint",
        tiny_checkpoint,
        "--store",
        tmp_path / "s",
        "--points-per-side",
        2,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0
    bad_id = dataset.values("id")[1]
    assert "1 sample(s) could not be embedded" in result.output
    assert f"{bad_id}: not a readable image" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--dataset", "no-such-dataset", "--sam", "vit_b"),
            "no FiftyOne dataset named 'no-such-dataset'",
        ),
        (("--sam", "vit_q"), "unknown SAM variant 'vit_q': use one of vit_b, vit_l, vit_h"),
        (
            ("--sam", "vit_b", "--checkpoint", "/nowhere/sam.pth"),
            "SAM checkpoint not found: /nowhere/sam.pth",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_a_readable_message(
    run, make_dataset, image_files, tmp_path, args, message
):
    dataset = make_dataset(image_files[:1])
    full = ["embed", "--dataset", dataset.name, "--store", tmp_path / "s", "--device", "cpu"]
    full += list(args)
    result = run(*full)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output
    assert "Traceback" not in result.output


def test_missing_official_checkpoint_offline_says_where_to_put_it(
    run, make_dataset, image_files, tmp_path, monkeypatch
):
    from fiftyone_usam.embeddings import sam_checkpoints

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(sam_checkpoints.urllib.request, "urlopen", offline)
    dataset = make_dataset(image_files[:1])
    result = run(
        "embed",
        "--dataset",
        dataset.name,
        "--store",
        tmp_path / "s",
        "--sam",
        "vit_b",
        "--device",
        "cpu",
    )
    assert result.exit_code == 1
    assert (
        "sam_vit_b_01ec64.pth" in result.output
        and "https://dl.fbaipublicfiles.com" in result.output
    )
    assert "--checkpoint PATH" in result.output
