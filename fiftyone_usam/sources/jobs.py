"""What to generate: one `ImageJob` per image, with its prompt, seed and recipe.

Every image is a unit of work ``(class, index)`` with its own seed, derived from ``(seed, class,
index)`` by SHA-256 (never Python's salted ``hash``), so an image does not depend on the batch it
ran in: a re-run reproduces it and an interrupted run resumes by making only the missing ones.
A *recipe* is a short hash of everything that decides a class's pixels (model, the class's
prompts and negative prompt, steps, guidance, scheduler, size, seed); a dataset holds an image
of ``(class, index, recipe)`` at most once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.sources.naming import slug
from fiftyone_usam.sources.pipelines import DEFAULT_MODEL, SCHEDULERS

if TYPE_CHECKING:
    from fiftyone_usam.ontology import Ontology

_SEED_MASK = (1 << 63) - 1


@dataclass(frozen=True)
class GenerationConfig:
    """What decides the pixels of generated images (recorded with every run).

    Attributes:
        model: hub id, or a local pipeline directory's absolute path.
        prompt: default prompt template (``{}`` is the class name) for classes without their
            own prompts; None: the ontology's.
        negative_prompt: for classes without their own; None: none.
        steps: denoising steps.
        guidance: classifier-free guidance scale (<= 1 turns guidance off).
        scheduler: a name from ``SCHEDULERS`` (``default``: the pipeline's own).
        height: pixels; None: the pipeline's default (512 for Stable Diffusion v1).
        width: pixels; None: the pipeline's default.
        seed: the run's seed, from which each image's seed is derived.
    """

    model: str = DEFAULT_MODEL
    prompt: str | None = None
    negative_prompt: str | None = None
    steps: int = 50
    guidance: float = 7.5
    scheduler: str = "default"
    height: int | None = None
    width: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"unknown scheduler {self.scheduler!r}: use one of {', '.join(SCHEDULERS)}"
            )
        for name in ("height", "width"):
            check_image_size(name, getattr(self, name))
        check_prompt(self.prompt)


@dataclass(frozen=True)
class ImageJob:
    """One image to make: its class, index within the class, prompts and seed."""

    label: str
    index: int
    prompt: str
    negative_prompt: str | None
    seed: int
    recipe: str


def image_seed(seed: int, label: str, index: int) -> int:
    """The seed of image ``index`` of class ``label`` in a run seeded ``seed``.

    Stable across processes, machines and Python versions (SHA-256, not ``hash``).

    Returns:
        An int in ``[0, 2**63)``.
    """
    digest = hashlib.sha256(f"{seed}\x1f{label}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & _SEED_MASK


def recipe_id(config: GenerationConfig, ontology: Ontology, label: str) -> str:
    """12 hex digits identifying how the images of class ``label`` are made."""
    spec = ontology.spec(label)
    key = {
        **asdict(config),
        "prompt": None,  # only the prompts actually used below count
        "negative_prompt": spec.negative_prompt or config.negative_prompt,
        "label": label,
        "prompts": list(class_prompts(config, ontology, label)),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def class_prompts(config: GenerationConfig, ontology: Ontology, label: str) -> tuple[str, ...]:
    """The prompts of a class: its own, else the run's (or the ontology's) template filled in."""
    if config.prompt is not None:
        ontology = replace(ontology, prompt=config.prompt)
    return ontology.prompts_for(label)


def plan_jobs(
    config: GenerationConfig, ontology: Ontology, per_class: int, done: set[tuple[str, int, str]]
) -> list[ImageJob]:
    """The images still to make, class by class, skipping ``(label, index, recipe)`` in ``done``.

    A class with several prompts uses them in turn (image ``i`` takes prompt ``i % n``).
    """
    jobs = []
    for label in ontology.names:
        prompts = class_prompts(config, ontology, label)
        negative = ontology.spec(label).negative_prompt or config.negative_prompt
        recipe = recipe_id(config, ontology, label)
        for index in range(per_class):
            if (label, index, recipe) not in done:
                seed = image_seed(config.seed, label, index)
                jobs.append(
                    ImageJob(label, index, prompts[index % len(prompts)], negative, seed, recipe)
                )
    return jobs


def image_path(images_dir: Path, job: ImageJob) -> Path:
    """``<images_dir>/<class slug>/<class slug>-<recipe>-<index>.png``."""
    name = slug(job.label)
    return images_dir / name / f"{name}-{job.recipe}-{job.index:05d}.png"


def check_image_size(name: str, value: int | None) -> None:
    """Raises ConfigError unless ``value`` (an image height or width) is None or a positive
    multiple of 8, as diffusion models need."""
    if value is not None and (value < 8 or value % 8):
        raise ConfigError(f"{name} must be a positive multiple of 8, got {value}")


def check_prompt(prompt: str | None) -> None:
    """Raises ConfigError for a prompt template without ``{}`` for the class name."""
    if prompt is not None and "{}" not in prompt:
        raise ConfigError(f"the prompt {prompt!r} needs a {{}} for the class name")
