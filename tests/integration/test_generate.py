"""`generate` with a tiny Stable Diffusion pipeline loaded from a directory, as a real model is.

Determinism, resume after an interruption, and what the dataset records.
"""

from pathlib import Path

import numpy as np
import pytest

from fiftyone_usam.errors import CheckpointError
from fiftyone_usam.fiftyone_io.training_dataset import OntologyMismatchError
from fiftyone_usam.sources.jobs import image_seed
from fiftyone_usam.stages.generate import generate
from tests.fixtures.diffusion import TINY_GENERATION

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def run(model, name, images_dir, classes="dog,cat", per_class=3, **options):
    settings = {**TINY_GENERATION, "batch_size": 2, "progress": False, **options}
    return generate(
        classes, dataset=name, per_class=per_class, model=model, images_dir=images_dir, **settings
    )


def pixels(dataset):
    """``(label, index) -> (H, W, 3)`` int array of each image."""
    from PIL import Image

    out = {}
    for sample in dataset.select_fields(["ground_truth", "generation_index"]):
        key = (sample.ground_truth.label, sample.generation_index)
        assert key not in out, f"{key} generated twice"
        out[key] = np.asarray(Image.open(sample.filepath)).astype(int)
    return out


def test_generate_builds_a_labelled_dataset(tiny_pipeline_dir, training_datasets, tmp_path):
    import fiftyone as fo

    name = training_datasets()
    report = run(tiny_pipeline_dir, name, tmp_path / "images")
    assert report.generated == 6 and report.already_done == 0 and report.requested == 6
    assert report.per_class == {"dog": 3, "cat": 3}
    assert report.scheduler == "PNDMScheduler"
    dataset = fo.load_dataset(name)
    assert dataset.persistent and len(dataset) == 6
    assert dataset.count_values("ground_truth.label") == {"dog": 3, "cat": 3}
    sample = dataset.match({"ground_truth.label": "cat", "generation_index": 1}).first()
    assert sample.source == "synthetic"
    assert sample.prompt == "a photo of a cat" and sample.negative_prompt is None
    assert sample.seed == image_seed(0, "cat", 1)
    assert sample.model == str(Path(tiny_pipeline_dir).resolve())
    assert (sample.steps, sample.guidance, sample.scheduler) == (2, 7.5, "PNDMScheduler")
    assert (sample.metadata.width, sample.metadata.height) == (64, 64)
    path = Path(sample.filepath)
    assert path.parent == tmp_path / "images" / "cat"
    assert path.name == f"cat-{sample.recipe}-00001.png"
    assert not list((tmp_path / "images").glob("*/.*"))  # no temporary files left
    assert dataset.info["usam_ontology"]["classes"][1]["name"] == "cat"
    assert dataset.classes["ground_truth"] == ["dog", "cat"]
    assert dataset.info["usam_source_runs"][-1]["settings"]["steps"] == 2


def test_the_same_seed_reproduces_the_images(tiny_pipeline_dir, training_datasets, tmp_path):
    import fiftyone as fo

    first, second, other = training_datasets(), training_datasets(), training_datasets()
    run(tiny_pipeline_dir, first, tmp_path / "a")
    run(tiny_pipeline_dir, second, tmp_path / "b", batch_size=4)  # other batches, same images
    run(tiny_pipeline_dir, other, tmp_path / "c", seed=1)
    a, b, c = (pixels(fo.load_dataset(n)) for n in (first, second, other))
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= 2  # batched matmuls differ by rounding only
        assert np.abs(a[key] - c[key]).mean() > 5


def test_an_interrupted_run_resumes_without_duplicates(
    tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo

    def stop_after_first_batch(done, total):
        if done >= 2:
            raise KeyboardInterrupt

    interrupted, whole = training_datasets(), training_datasets()
    with pytest.raises(KeyboardInterrupt):
        run(tiny_pipeline_dir, interrupted, tmp_path / "i", progress=stop_after_first_batch)
    assert len(fo.load_dataset(interrupted)) == 2  # the finished batch was kept
    resumed = run(tiny_pipeline_dir, interrupted, tmp_path / "i")
    assert resumed.generated == 4 and resumed.already_done == 2
    run(tiny_pipeline_dir, whole, tmp_path / "w")

    done, reference = fo.load_dataset(interrupted), fo.load_dataset(whole)
    assert len(done) == 6
    key = ["ground_truth.label", "generation_index", "seed", "prompt"]
    assert sorted(zip(*done.values(key), strict=True)) == sorted(
        zip(*reference.values(key), strict=True)
    )
    a, b = pixels(done), pixels(reference)
    for k in a:
        assert np.abs(a[k] - b[k]).max() <= 2
    assert len(list((tmp_path / "i").glob("*/*.png"))) == 6


def test_a_finished_run_does_no_work_and_more_per_class_adds_only_the_rest(
    tiny_pipeline_dir, training_datasets, tmp_path, monkeypatch
):
    from fiftyone_usam.sources import generation

    name = training_datasets()
    run(tiny_pipeline_dir, name, tmp_path / "i", per_class=2)
    more = run(tiny_pipeline_dir, name, tmp_path / "i", per_class=3)
    assert more.generated == 2 and more.already_done == 4

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when nothing is missing")

    monkeypatch.setattr(generation.Generator, "create", no_model)
    again = run(tiny_pipeline_dir, name, tmp_path / "i", per_class=3)
    assert again.generated == 0 and again.already_done == 6


def test_other_settings_make_new_images_beside_the_old(
    tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo

    name = training_datasets()
    run(tiny_pipeline_dir, name, tmp_path / "i", per_class=2)
    report = run(tiny_pipeline_dir, name, tmp_path / "i", per_class=2, scheduler="dpm++")
    assert report.generated == 4 and report.scheduler == "DPMSolverMultistepScheduler"
    dataset = fo.load_dataset(name)
    assert dataset.count_values("scheduler") == {
        "PNDMScheduler": 4,
        "DPMSolverMultistepScheduler": 4,
    }
    assert len(set(dataset.values("recipe"))) == 4  # 2 classes x 2 settings


def test_class_prompts_and_negative_prompts_from_a_yaml_ontology(
    tiny_pipeline_dir, training_datasets, tmp_path
):
    import fiftyone as fo
    import yaml

    ontology = tmp_path / "classes.yaml"
    ontology.write_text(
        yaml.safe_dump(
            {
                "classes": [
                    {"name": "potted plant", "prompts": ["a potted plant", "a houseplant"]},
                    {"name": "dog", "negative_prompt": "cartoon"},
                ]
            }
        )
    )
    name = training_datasets()
    run(tiny_pipeline_dir, name, tmp_path / "i", classes=str(ontology), prompt="a {} outdoors")
    dataset = fo.load_dataset(name)
    plant = dataset.match({"ground_truth.label": "potted plant"}).sort_by("generation_index")
    assert plant.values("prompt") == ["a potted plant", "a houseplant", "a potted plant"]
    assert Path(plant.first().filepath).parent.name == "potted-plant"
    dog = dataset.match({"ground_truth.label": "dog"})
    assert set(dog.values("prompt")) == {"a dog outdoors"}
    assert set(dog.values("negative_prompt")) == {"cartoon"}


def test_a_dataset_keeps_its_classes(tiny_pipeline_dir, training_datasets, tmp_path):
    import fiftyone as fo

    name = training_datasets()
    run(tiny_pipeline_dir, name, tmp_path / "i", per_class=1)
    with pytest.raises(OntologyMismatchError, match="name the same classes in the same order"):
        run(tiny_pipeline_dir, name, tmp_path / "i", classes="dog,horse", per_class=1)
    run(tiny_pipeline_dir, name, tmp_path / "i", classes="dog,cat,horse", per_class=1)
    assert fo.load_dataset(name).classes["ground_truth"] == ["dog", "cat", "horse"]
    report = run(tiny_pipeline_dir, name, tmp_path / "i", classes=None, per_class=1)
    assert report.already_done == 3
    only_dogs = run(tiny_pipeline_dir, name, tmp_path / "i", classes="dog", per_class=2)
    assert only_dogs.generated == 1 and only_dogs.per_class == {"dog": 2}
    assert fo.load_dataset(name).classes["ground_truth"] == ["dog", "cat", "horse"]


def test_a_users_own_dataset_is_not_written_to(tiny_pipeline_dir, make_dataset, image_files):
    from fiftyone_usam.errors import ConfigError

    dataset = make_dataset(image_files[:2])
    with pytest.raises(ConfigError, match="was not made by `usam generate`"):
        run(tiny_pipeline_dir, dataset.name, None)


def test_without_weights_the_error_says_how_to_get_them(training_datasets, tmp_path):
    import fiftyone as fo

    name = training_datasets()
    with pytest.raises(CheckpointError, match="huggingface-cli download CompVis/stable-diffu"):
        run("CompVis/stable-diffusion-v1-4", name, tmp_path / "i", per_class=1)
    assert not fo.dataset_exists(name)  # nothing was written
    with pytest.raises(CheckpointError, match="no pipeline directory"):
        run(tmp_path / "nowhere", name, tmp_path / "i", per_class=1)
    with pytest.raises(CheckpointError, match=r"no model_index\.json"):
        run(tmp_path, name, tmp_path / "i", per_class=1)


def test_a_loaded_pipeline_can_be_passed(training_datasets, tmp_path):
    import fiftyone as fo

    from fiftyone_usam.testing.pipelines import build_random_pipeline

    name = training_datasets()
    pipe = build_random_pipeline("tiny")
    report = run(pipe, name, tmp_path / "i", per_class=1, scheduler="euler")
    assert report.generated == 2 and report.scheduler == "EulerDiscreteScheduler"
    assert set(fo.load_dataset(name).values("model")) == {"StableDiffusionPipeline"}
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"  # the caller's pipeline unchanged


def test_generated_and_crawled_images_share_a_dataset(
    tiny_pipeline_dir, crawl_corpus, training_datasets, tmp_path
):
    import fiftyone as fo

    from fiftyone_usam.stages.crawl import crawl
    from tests.fixtures.http_images import CORPUS_LIMITS

    name = training_datasets()
    urls = crawl_corpus.write_urls_file(tmp_path / "urls.tsv")
    crawl("dog,cat", dataset=name, per_class=2, engine="urls", urls_file=urls, delay=0,
          images_dir=tmp_path / "i", progress=False, **CORPUS_LIMITS)  # fmt: skip
    report = run(tiny_pipeline_dir, name, tmp_path / "i", per_class=1)
    assert report.generated == 2
    dataset = fo.load_dataset(name)
    assert dataset.count_values("source") == {"crawled": 4, "synthetic": 2}
    assert dataset.count_values("ground_truth.label") == {"dog": 3, "cat": 3}
