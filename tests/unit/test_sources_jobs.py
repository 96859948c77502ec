"""Seeds, recipes and the plan of images to generate (pure functions)."""

from pathlib import Path

import pytest

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.ontology import load_ontology, ontology_from_dict
from fiftyone_usam.sources.jobs import (
    GenerationConfig,
    image_path,
    image_seed,
    plan_jobs,
    recipe_id,
)


def test_image_seeds_are_sha256_of_seed_class_and_index():
    # pinned: a change here silently changes every user's images
    assert image_seed(0, "dog", 0) == 4373537717037059527
    assert image_seed(0, "potted plant", 7) == 4585160957174209182
    seeds = {image_seed(s, c, i) for s in (0, 1) for c in ("dog", "cat") for i in range(50)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**63 for s in seeds)


def test_image_seeds_do_not_depend_on_the_process():
    import subprocess
    import sys

    code = "from fiftyone_usam.sources.jobs import image_seed; print(image_seed(3, 'cat', 5))"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": str(salt), "PATH": ""},
            check=True,
        ).stdout
        for salt in (1, 2)
    }
    assert runs == {f"{image_seed(3, 'cat', 5)}\n"}


def test_recipes_change_with_what_changes_the_pixels():
    ontology = load_ontology("dog,cat")
    base = GenerationConfig(model="m", steps=2)
    recipe = recipe_id(base, ontology, "dog")
    assert recipe == recipe_id(GenerationConfig(model="m", steps=2), ontology, "dog")
    assert len(recipe) == 12
    for changed in (
        GenerationConfig(model="other", steps=2),
        GenerationConfig(model="m", steps=3),
        GenerationConfig(model="m", steps=2, guidance=3.0),
        GenerationConfig(model="m", steps=2, scheduler="ddim"),
        GenerationConfig(model="m", steps=2, height=256),
        GenerationConfig(model="m", steps=2, seed=1),
        GenerationConfig(model="m", steps=2, prompt="a {} in a field"),
        GenerationConfig(model="m", steps=2, negative_prompt="blurry"),
    ):
        assert recipe_id(changed, ontology, "dog") != recipe
    assert recipe_id(base, ontology, "cat") != recipe
    # the template only counts through the prompts it makes
    same = GenerationConfig(model="m", steps=2, prompt="a photo of a {}")
    assert recipe_id(same, ontology, "dog") == recipe


def test_a_class_with_its_own_prompts_ignores_the_template():
    ontology = ontology_from_dict({"classes": [{"name": "dog", "prompts": ["a dog", "a pup"]}]})
    a = recipe_id(GenerationConfig(prompt="x {}"), ontology, "dog")
    b = recipe_id(GenerationConfig(prompt="y {}"), ontology, "dog")
    assert a == b
    jobs = plan_jobs(GenerationConfig(prompt="x {}"), ontology, 3, set())
    assert [j.prompt for j in jobs] == ["a dog", "a pup", "a dog"]


def test_plan_skips_the_images_already_made():
    ontology = load_ontology("dog,cat")
    config = GenerationConfig()
    jobs = plan_jobs(config, ontology, 3, set())
    assert [(j.label, j.index) for j in jobs] == [(c, i) for c in ("dog", "cat") for i in range(3)]
    dog = recipe_id(config, ontology, "dog")
    done = {("dog", 0, dog), ("dog", 2, dog), ("cat", 1, "another-recipe")}
    left = plan_jobs(config, ontology, 3, done)
    assert [(j.label, j.index) for j in left] == [("dog", 1), ("cat", 0), ("cat", 1), ("cat", 2)]
    assert left[0].seed == image_seed(0, "dog", 1) and left[0].prompt == "a photo of a dog"


def test_negative_prompts_come_from_the_class_then_the_run():
    ontology = ontology_from_dict(
        {"classes": [{"name": "dog", "negative_prompt": "cartoon"}, "cat"]}
    )
    jobs = plan_jobs(GenerationConfig(negative_prompt="blurry"), ontology, 1, set())
    assert [j.negative_prompt for j in jobs] == ["cartoon", "blurry"]


def test_image_paths_are_ours():
    ontology = load_ontology(["Potted Plant/Pot"])
    (job,) = plan_jobs(GenerationConfig(), ontology, 1, set())
    path = image_path(Path("/data"), job)
    assert path == Path(f"/data/potted-plant-pot/potted-plant-pot-{job.recipe}-00000.png")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"scheduler": "fast"}, "unknown scheduler 'fast'"),
        ({"height": 100}, "height must be a positive multiple of 8"),
        ({"prompt": "a dog"}, "needs a {} for the class name"),
    ],
)
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(ConfigError, match=message.replace("{}", r"\{\}")):
        GenerationConfig(**settings)
