"""`kill -9` in the middle of each long command, then a re-run: the result equals an
uninterrupted run's. Each command runs as a real subprocess (`python -m fiftyone_usam`) and is
killed once it has written part of its work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fiftyone_usam.embeddings.store import EmbeddingStore

pytestmark = pytest.mark.slow


def usam(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "fiftyone_usam", *(str(a) for a in args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_midway(args: list[object], started: Callable[[], bool], timeout: float = 300) -> bool:
    """Starts ``usam ARGS`` and SIGKILLs it once ``started()``; True if it was still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fiftyone_usam", *(str(a) for a in args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline and not started():
            time.sleep(0.05)
        running = proc.poll() is None
        if running:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return running


@pytest.fixture
def many_images(image_files, tmp_path) -> list[Path]:
    """24 images (the six test images, each four times under another name)."""
    out = []
    for copy in range(4):
        for path in image_files:
            target = tmp_path / "many" / f"{copy}_{path.name}"
            target.parent.mkdir(exist_ok=True)
            shutil.copy(path, target)
            out.append(target)
    return out


def shards(store: Path) -> list[Path]:
    return list((store / "shards").glob("*.safetensors")) if store.exists() else []


def test_embed_killed_then_resumed_equals_one_run(
    make_dataset, many_images, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(many_images)
    common = ["--dataset", dataset.name, "--checkpoint", tiny_checkpoint, "--points-per-side",
              2, "--device", "cpu", "--batch-size", 1, "--shard-size", 1]  # fmt: skip
    killed = kill_midway(
        ["embed", "--store", tmp_path / "a", *common], lambda: len(shards(tmp_path / "a")) >= 3
    )
    assert killed and 3 <= len(EmbeddingStore.open(tmp_path / "a")) < len(many_images)
    usam("embed", "--store", tmp_path / "a", *common)
    usam("embed", "--store", tmp_path / "b", *common)
    a, b = EmbeddingStore.open(tmp_path / "a"), EmbeddingStore.open(tmp_path / "b")
    assert a.sample_ids() == b.sample_ids() == set(dataset.values("id"))
    for sample_id in a.sample_ids():
        x, y = a.get(sample_id), b.get(sample_id)
        np.testing.assert_array_equal(x.embeddings, y.embeddings)
        assert x.mask_rles == y.mask_rles


def test_generate_killed_then_resumed_equals_one_run(
    tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo

    def args(name: str, folder: Path) -> list[object]:
        return ["generate", "--classes", "disc,square", "--per-class", 6, "--model",
                tiny_pipeline_dir, "--steps", 2, "--height", 64, "--width", 64,
                "--batch-size", 1, "--seed", 0, "--dataset", name, "--images-dir", folder,
                "--device", "cpu"]  # fmt: skip

    def count(name: str) -> int:
        if not fo.dataset_exists(name):
            return 0
        dataset = fo.load_dataset(name)
        dataset.reload()
        return len(dataset)

    killed_name, clean_name = training_datasets(), training_datasets()
    assert kill_midway(args(killed_name, tmp_path / "a"), lambda: count(killed_name) >= 2)
    assert count(killed_name) < 12
    usam(*args(killed_name, tmp_path / "a"))
    usam(*args(clean_name, tmp_path / "b"))

    def images(name: str) -> dict[tuple[str, int], np.ndarray]:
        view = fo.load_dataset(name)
        view.reload()  # loaded while the subprocess was adding its fields
        keys = zip(view.values("ground_truth.label"), view.values("generation_index"), strict=True)
        return {
            key: np.asarray(Image.open(path))
            for key, path in zip(keys, view.values("filepath"), strict=True)
        }

    a, b = images(killed_name), images(clean_name)
    assert a.keys() == b.keys() and len(a) == 12
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def labels(dataset, field: str = "usam") -> dict[str, tuple]:
    dataset.reload()
    out = {}
    for sample in dataset:
        detections = sample[f"{field}_instances"].detections
        out[Path(sample.filepath).name] = (
            sample[f"{field}_semantic"].mask.tobytes(),
            [(d.label, round(d.confidence, 6)) for d in detections],
        )
    return out


def test_predict_killed_then_resumed_equals_one_run(make_dataset, many_images, tiny_head, tmp_path):
    killed, clean = make_dataset(many_images), make_dataset(many_images)

    def args(dataset, store: Path) -> list[object]:
        return ["predict", "--dataset", dataset.name, "--head", tiny_head, "--store", store,
                "--threshold", 0.0, "--device", "cpu", "--batch-size", 1,
                "--shard-size", 1]  # fmt: skip

    assert kill_midway(args(killed, tmp_path / "a"), lambda: len(shards(tmp_path / "a")) >= 3)
    usam(*args(killed, tmp_path / "a"))
    usam(*args(clean, tmp_path / "b"))
    assert labels(killed) == labels(clean)


def test_labelling_killed_then_resumed_equals_one_run(
    make_dataset, many_images, tiny_head, tmp_path
):
    """Killed while it writes labels from a complete store (bulk writes, 1 sample a batch)."""
    import fiftyone as fo

    killed, clean = make_dataset(many_images), make_dataset(many_images)

    def args(dataset, store: Path, field: str = "usam") -> list[object]:
        return ["predict", "--dataset", dataset.name, "--head", tiny_head, "--store", store,
                "--threshold", 0.0, "--device", "cpu", "--field", field,
                "--label-batch-size", 1]  # fmt: skip

    usam(*args(killed, tmp_path / "a", field="warm"))  # the store now holds every image

    def labelling() -> bool:
        return len(fo.load_dataset(killed.name).exists("usam_semantic")) >= 3

    assert kill_midway(args(killed, tmp_path / "a"), labelling)
    partial = fo.load_dataset(killed.name)
    done = len(partial.exists("usam_semantic"))
    assert 3 <= done < 24
    # every sample with a semantic map has its instances and uncertainty too
    assert len(partial.exists("usam_semantic").exists("usam_instances")) == done
    assert "already labelled" in usam(*args(killed, tmp_path / "a")).stdout
    usam(*args(clean, tmp_path / "b"))
    assert labels(killed) == labels(clean)


def test_run_killed_then_resumed_equals_one_run(
    make_dataset, image_files, tiny_pipeline_dir, tiny_checkpoint, training_datasets, tmp_path
):
    import fiftyone as fo

    killed, clean = make_dataset(image_files), make_dataset(image_files)

    def args(dataset, train: str, work: Path) -> list[object]:
        return ["run", "--classes", "disc,square", "--dataset", dataset.name, "--per-class", 4,
                "--model", tiny_pipeline_dir, "--steps", 2, "--checkpoint", tiny_checkpoint,
                "--points-per-side", 2, "--epochs", 2, "--workdir", work, "--training-dataset",
                train, "--threshold", 0.0, "--device", "cpu"]  # fmt: skip

    train_killed, train_clean = training_datasets(), training_datasets()

    def generating() -> bool:
        if not fo.dataset_exists(train_killed):
            return False
        dataset = fo.load_dataset(train_killed)
        dataset.reload()
        return len(dataset) >= 2

    assert kill_midway(args(killed, train_killed, tmp_path / "a"), generating)
    usam(*args(killed, train_killed, tmp_path / "a"))
    usam(*args(clean, train_clean, tmp_path / "b"))
    assert labels(killed) == labels(clean)


def test_the_helper_notices_a_command_that_ends_first():
    assert not kill_midway(["--version"], lambda: False, timeout=60)
