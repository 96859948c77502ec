"""`generate`: training images of each class from a text-to-image diffusion model.

Each image has its own seed derived from ``(seed, class, index)`` (see `jobs`), so a re-run
reproduces it, and which images exist is read from the dataset, so an interrupted run resumes by
making only the missing ones. Each batch's images and samples are saved before the next batch.

Sample fields: ``ground_truth`` (`fo.Classification`), ``source`` (``"synthetic"``), ``prompt``,
``negative_prompt``, ``seed`` (this image's seed), ``generation_index``, ``model``, ``steps``,
``guidance``, ``scheduler`` (the class used), ``recipe``; ``metadata`` holds the image size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.devices import Precision
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.training_dataset import (
    LABEL_FIELD,
    declare_fields,
    default_images_dir,
    find_training_dataset,
    open_training_dataset,
    record_run,
    resolve_ontology,
    training_sample,
)
from fiftyone_usam.files import remove_stale_temp_files, save_image_atomic
from fiftyone_usam.progress import Progress, ProgressCallback
from fiftyone_usam.sources.generation import Generator
from fiftyone_usam.sources.jobs import (
    GenerationConfig,
    ImageJob,
    image_path,
    plan_jobs,
    recipe_id,
)
from fiftyone_usam.sources.pipelines import DEFAULT_MODEL, model_name

if TYPE_CHECKING:
    import fiftyone as fo
    import torch

    from fiftyone_usam.ontology import Ontology

logger = logging.getLogger(__name__)

SOURCE = "synthetic"
FIELDS: dict[str, type] = {
    "source": str,
    "prompt": str,
    "negative_prompt": str,
    "seed": int,
    "generation_index": int,
    "model": str,
    "steps": int,
    "guidance": float,
    "scheduler": str,
    "recipe": str,
}

__all__ = ["GenerateReport", "GenerationConfig", "generate"]


@dataclass
class GenerateReport:
    """What a `generate` run did.

    Attributes:
        dataset: the dataset's name.
        images_dir: where the images are.
        requested: images asked for (classes x per_class).
        generated: images made by this run.
        already_done: images that were already in the dataset.
        flagged: images the pipeline's safety checker blanked (not added).
        scheduler: the scheduler class used (empty if nothing ran).
        seconds: wall time of the run.
        generation_seconds: time spent in the pipeline.
    """

    dataset: str
    images_dir: Path
    requested: int = 0
    generated: int = 0
    already_done: int = 0
    flagged: int = 0
    scheduler: str = ""
    seconds: float = 0.0
    generation_seconds: float = 0.0
    per_class: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Generated images per second of pipeline time."""
        return self.generated / self.generation_seconds if self.generation_seconds else 0.0

    def summary(self) -> str:
        """One line for people."""
        flagged = f", {self.flagged} blanked by the safety checker" if self.flagged else ""
        speed = f", {self.images_per_second:.2f} images/s" if self.generated else ""
        return (
            f"{self.generated} generated, {self.already_done} already in the dataset{flagged}, "
            f"of {self.requested} images -> dataset {self.dataset!r} ({self.seconds:.1f} s{speed})"
        )


def generate(
    classes: str | Path | Sequence[str] | Ontology | None = None,
    *,
    dataset: str,
    per_class: int = 200,
    model: str | Path | Any = DEFAULT_MODEL,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    steps: int = 50,
    guidance: float = 7.5,
    scheduler: str = "default",
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 4,
    seed: int = 0,
    images_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    precision: Precision = "auto",
    attention_slicing: bool = False,
    cpu_offload: bool = False,
    progress: bool | ProgressCallback | None = None,
) -> GenerateReport:
    """Generates ``per_class`` images of each class into a FiftyOne dataset (resumable).

    Args:
        classes: the ontology: ``"a,b,c"``, a list of names, a YAML file or an `Ontology`;
            None: the one stored with ``dataset``.
        dataset: the dataset's name; created (persistent) if absent. An existing one must hold
            the same classes (see `training_dataset.merge_ontologies`).
        per_class: images per class (with these settings) the dataset should hold.
        model: a hub id, a local pipeline directory, or a loaded diffusers pipeline (recorded
            by its ``name_or_path``, else its class name).
        prompt: prompt template with ``{}`` for the class name, for classes without their own
            prompts. Default: the ontology's (``"a photo of a {}"``).
        negative_prompt: for classes without their own.
        steps: denoising steps.
        guidance: classifier-free guidance scale.
        scheduler: ``default`` (the pipeline's), ``pndm``, ``ddim``, ``dpm++``, ``euler``,
            ``euler-ancestral``, ``lms`` or ``unipc``.
        height: image height in pixels (multiple of 8). Default: the pipeline's.
        width: image width in pixels (multiple of 8). Default: the pipeline's.
        batch_size: prompts per pipeline call.
        seed: the run's seed; image ``i`` of class ``c`` uses ``image_seed(seed, c, i)``.
        images_dir: where images are written. Default:
            ``<FiftyOne dataset dir>/usam/<dataset>/images``.
        device: torch device. Default: CUDA if available, else the CPU.
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        attention_slicing: slice attention to save GPU memory.
        cpu_offload: keep sub-models on the CPU until used (small GPUs; needs ``accelerate``).
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(done, total)`` images after each batch.

    Returns:
        A `GenerateReport`.

    Raises:
        CheckpointError: the model cannot be loaded (the message says how to get it).
        OntologyMismatchError: the dataset holds other classes.
    """
    started = time.perf_counter()
    if per_class < 0 or batch_size < 1:
        raise ConfigError("per_class must be >= 0 and batch_size >= 1")
    ontology = resolve_ontology(classes, dataset)
    is_pipeline = not isinstance(model, str | Path)
    config = GenerationConfig(
        model=_pipeline_name(model) if is_pipeline else model_name(model),
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        height=height,
        width=width,
        seed=seed,
    )
    existing = find_training_dataset(dataset, ontology)
    jobs = plan_jobs(config, ontology, per_class, _done(existing) if existing else set())
    runner = None
    if jobs:  # load the model before writing anything: without weights, nothing is created
        runner = Generator.create(
            model, device, precision, attention_slicing=attention_slicing, cpu_offload=cpu_offload
        )
    target = open_training_dataset(dataset, ontology)
    declare_fields(target, FIELDS)
    folder = Path(images_dir).expanduser() if images_dir else default_images_dir(dataset)
    remove_stale_temp_files(folder)
    report = GenerateReport(dataset, folder, requested=len(ontology) * per_class)
    report.already_done = report.requested - len(jobs)
    if runner is not None:
        report.scheduler = runner.use_scheduler(config.scheduler)
        _run(runner, jobs, config, target, folder, batch_size, report, progress)
    report.per_class = _counts(target, config, ontology)
    report.seconds = time.perf_counter() - started
    settings = {**asdict(config), "per_class": per_class, "images_dir": str(folder)}
    record_run(target, "generate", settings, report.summary())
    logger.info("generate: %s", report.summary())
    return report


def _run(
    runner: Any,
    jobs: list[ImageJob],
    config: GenerationConfig,
    dataset: fo.Dataset,
    folder: Path,
    batch_size: int,
    report: GenerateReport,
    progress: bool | ProgressCallback | None,
) -> None:
    """Makes the images batch by batch; each finished batch is saved before the next starts."""
    bar = Progress(progress, len(jobs), "generate")
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            tick = time.perf_counter()
            images, flagged = runner.run(batch, config)
            report.generation_seconds += time.perf_counter() - tick
            samples = []
            for job, image, blanked in zip(batch, images, flagged, strict=True):
                if blanked:
                    report.flagged += 1
                    logger.warning("safety checker blanked %s #%d: not added", job.label, job.index)
                    continue
                path = image_path(folder, job)
                save_image_atomic(path, image)
                samples.append(_sample(path, image, job, config, report.scheduler))
            if samples:
                dataset.add_samples(samples, progress=False)
            report.generated += len(samples)
            bar.update(len(batch))
    finally:
        bar.close()


def _sample(
    path: Path, image: Any, job: ImageJob, config: GenerationConfig, scheduler: str
) -> fo.Sample:
    return training_sample(
        path,
        job.label,
        width=image.width,
        height=image.height,
        num_channels=3,
        mime_type="image/png",
        size_bytes=path.stat().st_size,
        source=SOURCE,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        seed=job.seed,
        generation_index=job.index,
        model=config.model,
        steps=config.steps,
        guidance=float(config.guidance),
        scheduler=scheduler,
        recipe=job.recipe,
    )


def _done(dataset: fo.Dataset) -> set[tuple[str, int, str]]:
    """``(label, index, recipe)`` of the generated images the dataset holds."""
    if "recipe" not in dataset.get_field_schema():
        return set()  # e.g. a dataset of crawled images
    view = dataset.exists("recipe")
    labels, indices, recipes = view.values([f"{LABEL_FIELD}.label", "generation_index", "recipe"])
    return set(zip(labels, indices, recipes, strict=True))


def _counts(dataset: fo.Dataset, config: GenerationConfig, ontology: Ontology) -> dict[str, int]:
    """Images per class made with ``config``'s recipe."""
    done = _done(dataset)
    counts = {}
    for label in ontology.names:
        recipe = recipe_id(config, ontology, label)
        counts[label] = sum(1 for lab, _, rec in done if lab == label and rec == recipe)
    return counts


def _pipeline_name(pipe: Any) -> str:
    name = getattr(pipe, "name_or_path", None) or getattr(
        getattr(pipe, "config", None), "_name_or_path", None
    )
    return str(name) if name else type(pipe).__name__
