"""`generate` on a real local Ray (started once for this module) with the tiny pipeline: the
images and samples of a local run, nothing made twice, and what cannot travel or load."""

import numpy as np
import pytest
import ray
from click.testing import CliRunner

from fiftyone_usam.errors import CheckpointError, ConfigError
from fiftyone_usam.stages.generate import FIELDS, generate
from tests.fixtures.diffusion import TINY_GENERATION

pytestmark = pytest.mark.usefixtures("torch_single_thread")

CLASSES = "dog,cat,potted plant,person"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs for the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run(model, name, images_dir, per_class=2, **options):
    settings = {**TINY_GENERATION, "batch_size": 2, "progress": False, **options}
    return generate(
        CLASSES, dataset=name, per_class=per_class, model=model, images_dir=images_dir, **settings
    )


def run_cli(model, name, images_dir, *options):
    from fiftyone_usam.cli import main

    args = [
        "generate", "--classes", CLASSES, "--per-class", 2, "--model", model, "--steps", 2,
        "--height", 64, "--width", 64, "--batch-size", 2, "--device", "cpu",
        "--dataset", name, "--images-dir", images_dir, *options,
    ]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def samples(name, images_dir):
    """``(label, index) -> (fields, (H, W, 3) int pixels)`` of each sample of ``name``."""
    import fiftyone as fo
    from PIL import Image

    out = {}
    for sample in fo.load_dataset(name):
        key = (sample.ground_truth.label, sample.generation_index)
        assert key not in out, f"{key} added twice"
        fields = {f: sample[f] for f in FIELDS}
        meta = sample.metadata
        fields["metadata"] = (meta.width, meta.height, meta.num_channels, meta.size_bytes)
        fields["file"] = str(sample.filepath).removeprefix(str(images_dir))
        out[key] = (fields, np.asarray(Image.open(sample.filepath)).astype(int))
    return out


def modified(images_dir):
    return {p: p.stat().st_mtime_ns for p in images_dir.glob("*/*.png")}


def test_two_workers_make_the_images_and_samples_of_a_local_run(
    local_ray, tiny_pipeline_dir, training_datasets, tmp_path
):
    local, on_ray = training_datasets(), training_datasets()
    run(tiny_pipeline_dir, local, tmp_path / "local")
    output = run_cli(tiny_pipeline_dir, on_ray, tmp_path / "ray", "--engine", "ray", "--workers", 2)
    assert "8 generated, 0 already in the dataset, of 8 images" in output
    assert "on Ray with 2 worker(s)" in output

    a, b = samples(local, tmp_path / "local"), samples(on_ray, tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 8
    for key in a:
        assert a[key][0] == b[key][0], key  # every field, the file's name and size
        assert np.array_equal(a[key][1], b[key][1]), key  # the same batches: the same pixels
    assert not list((tmp_path / "ray").glob("*/.*"))  # no temporary files left

    before = modified(tmp_path / "ray")
    again = run(tiny_pipeline_dir, on_ray, tmp_path / "ray", engine="ray", workers=2)
    assert (again.generated, again.already_done, again.per_class["cat"]) == (0, 8, 2)
    assert again.execution == {"engine": "ray", "workers": 2, "address": "local", "workers_ran": 0}
    assert modified(tmp_path / "ray") == before  # nothing made again


def test_images_saved_but_not_added_are_added_without_being_made_again(
    local_ray, tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo

    name = training_datasets()
    first = run(tiny_pipeline_dir, name, tmp_path / "i", engine="ray", workers=2)
    assert first.generated == 8 and first.generation_seconds > 0
    assert first.execution["workers_ran"] >= 1 and first.scheduler == "PNDMScheduler"
    reference = samples(name, tmp_path / "i")
    dataset = fo.load_dataset(name)
    dataset.delete_samples(dataset.match({"ground_truth.label": "cat"}))  # as if killed
    before = modified(tmp_path / "i")

    resumed = run(tiny_pipeline_dir, name, tmp_path / "i", engine="ray")
    assert (resumed.generated, resumed.already_done, resumed.generation_seconds) == (2, 6, 0.0)
    assert modified(tmp_path / "i") == before  # read back, not made again
    again = samples(name, tmp_path / "i")
    assert again.keys() == reference.keys()
    for key, (fields, pixels) in again.items():
        assert fields == reference[key][0] and np.array_equal(pixels, reference[key][1])


def test_a_loaded_pipeline_cannot_travel(local_ray, training_datasets, tmp_path):
    import fiftyone as fo

    from fiftyone_usam.testing.pipelines import build_random_pipeline

    name = training_datasets()
    with pytest.raises(ConfigError, match="a pipeline object in memory cannot travel") as e:
        run(build_random_pipeline("tiny"), name, tmp_path / "i", per_class=1, engine="ray")
    assert "save_pretrained(DIR)" in str(e.value) and "engine='local'" in str(e.value)
    assert not fo.dataset_exists(name)


def test_without_weights_nothing_is_created_and_no_worker_starts(
    training_datasets, tmp_path, monkeypatch
):
    import fiftyone as fo

    from fiftyone_usam.execution import engines

    def no_ray(*args, **kwargs):
        raise AssertionError("the driver must refuse before any worker starts")

    monkeypatch.setattr(engines, "run_on_ray", no_ray)
    name = training_datasets()
    with pytest.raises(CheckpointError, match="huggingface-cli download CompVis/stable-diffu"):
        run("CompVis/stable-diffusion-v1-4", name, tmp_path / "i", per_class=1, engine="ray")
    with pytest.raises(CheckpointError, match="no pipeline directory"):
        run(tmp_path / "nowhere", name, tmp_path / "i", per_class=1, engine="ray")
    assert not fo.dataset_exists(name)


def test_workers_that_cannot_load_the_model_leave_nothing_behind(
    local_ray, tiny_pipeline_dir, training_datasets, tmp_path
):
    import shutil

    import fiftyone as fo

    broken = tmp_path / "broken"  # passes the driver's check; its components are missing
    broken.mkdir()
    shutil.copy(tiny_pipeline_dir / "model_index.json", broken)
    name = training_datasets()
    with pytest.raises(Exception, match="cannot load the text-to-image model"):
        run(broken, name, tmp_path / "i", per_class=1, engine="ray")
    assert not fo.dataset_exists(name)
