"""`generate`: training images of each class from a text-to-image diffusion model.

Each image has its own seed derived from ``(seed, class, index)`` (see `jobs`), so a re-run
reproduces it, and which images exist is read from the dataset, so an interrupted run resumes by
making only the missing ones. The work itself (`execution.generation.GenerateTask`: the pipeline
loaded once, images made in batches and saved atomically) runs in this process or on Ray actors
(``engine``); this module plans the jobs, adds the samples and reports. On the local engine each
batch's images and samples are saved before the next batch starts.

Sample fields: ``ground_truth`` (`fo.Classification`), ``source`` (``"synthetic"``), ``prompt``,
``negative_prompt``, ``seed`` (this image's seed), ``generation_index``, ``model``, ``steps``,
``guidance``, ``scheduler`` (the class used), ``recipe``; ``metadata`` holds the image size.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.devices import Precision
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.execution.engines import execute
from fiftyone_usam.execution.generation import GenerateTask, job_item, job_key
from fiftyone_usam.execution.work import Engine, ExecutionConfig, Outcome
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
from fiftyone_usam.files import remove_stale_temp_files
from fiftyone_usam.progress import Progress, ProgressCallback
from fiftyone_usam.sources.generation import Generator
from fiftyone_usam.sources.jobs import GenerationConfig, ImageJob, plan_jobs, recipe_id
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
        generated: images added by this run (with any that an interrupted run had saved but
            not added: they are not made again).
        already_done: images that were already in the dataset.
        flagged: images the pipeline's safety checker blanked (not added).
        scheduler: the scheduler class used (empty if nothing ran).
        seconds: wall time of the run.
        generation_seconds: time spent in the pipeline (summed over the workers on Ray).
        per_class: images per class the dataset holds with these settings.
        execution: where the work ran: ``engine``, ``workers``, the Ray ``address``, and on
            Ray ``workers_ran``, the actors that did work (a restarted one counts again).
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
    execution: dict[str, Any] = field(default_factory=lambda: {"engine": "local", "workers": 1})

    @property
    def images_per_second(self) -> float:
        """Generated images per second of pipeline time (per worker on Ray)."""
        return self.generated / self.generation_seconds if self.generation_seconds else 0.0

    def summary(self) -> str:
        """One line for people."""
        flagged = f", {self.flagged} blanked by the safety checker" if self.flagged else ""
        where = ""
        if self.execution.get("engine") == "ray":
            where = f", on Ray with {self.execution['workers']} worker(s)"
        speed = f", {self.images_per_second:.2f} images/s" if self.generated else ""
        return (
            f"{self.generated} generated, {self.already_done} already in the dataset{flagged}, "
            f"of {self.requested} images -> dataset {self.dataset!r} "
            f"({self.seconds:.1f} s{where}{speed})"
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
    engine: Engine = "local",
    workers: int = 1,
    gpus_per_worker: float | None = None,
    ray_address: str | None = None,
    progress: bool | ProgressCallback | None = None,
) -> GenerateReport:
    """Generates ``per_class`` images of each class into a FiftyOne dataset (resumable).

    With ``engine="ray"`` (``usam generate --engine ray --workers N``) the images are made on
    ``workers`` Ray actors, each loading the pipeline once from ``model`` (a hub id or a
    pipeline directory: a pipeline object cannot travel) and saving its images itself; this
    process adds the samples as images arrive. They are a local run's images and samples. The
    pipeline directory and ``images_dir`` must be on storage every node sees. This process does
    not load the pipeline then: before anything is written it checks that ``model`` is a
    pipeline directory, or a hub id whose ``model_index.json`` it can fetch (no weights); and it
    creates the dataset only once images arrive, so workers that cannot load the model leave
    nothing behind either.

    Args:
        classes: the ontology: ``"a,b,c"``, a list of names, a YAML file or an `Ontology`;
            None: the one stored with ``dataset``.
        dataset: the dataset's name; created (persistent) if absent. An existing one must hold
            the same classes (see `training_dataset.merge_ontologies`).
        per_class: images per class (with these settings) the dataset should hold.
        model: a hub id, a local pipeline directory, or a loaded diffusers pipeline (recorded
            by its ``name_or_path``, else its class name; ``engine="local"`` only).
        prompt: prompt template with ``{}`` for the class name, for classes without their own
            prompts. Default: the ontology's (``"a photo of a {}"``).
        negative_prompt: for classes without their own.
        steps: denoising steps.
        guidance: classifier-free guidance scale.
        scheduler: ``default`` (the pipeline's), ``pndm``, ``ddim``, ``dpm++``, ``euler``,
            ``euler-ancestral``, ``lms`` or ``unipc``.
        height: image height in pixels (multiple of 8). Default: the pipeline's.
        width: image width in pixels (multiple of 8). Default: the pipeline's.
        batch_size: prompts per pipeline call (and, on Ray, images per request to an actor).
        seed: the run's seed; image ``i`` of class ``c`` uses ``image_seed(seed, c, i)``.
        images_dir: where images are written. Default:
            ``<FiftyOne dataset dir>/usam/<dataset>/images``. An image file already there
            under its job's name (an interrupted run saved it) is added without being made
            again, unless ``model`` is a pipeline object (not identified by name).
        device: torch device. Default: CUDA if available, else the CPU (on each Ray worker).
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        attention_slicing: slice attention to save GPU memory.
        cpu_offload: keep sub-models on the CPU until used (small GPUs; needs ``accelerate``).
        engine: ``local`` runs the pipeline in this process; ``ray`` on Ray actors.
        workers: Ray actors (``engine="ray"``), e.g. one per GPU.
        gpus_per_worker: GPUs per actor; None: 1 when the cluster has GPUs, else 0.
        ray_address: the Ray cluster; None: ``RAY_ADDRESS`` if set, else a local Ray started
            for the run.
        progress: a progress bar (True/False; None follows FiftyOne's ``show_progress_bars``),
            or a callable receiving ``(done, total)`` images after each batch.

    Returns:
        A `GenerateReport`.

    Raises:
        CheckpointError: the model cannot be loaded (the message says how to get it).
        OntologyMismatchError: the dataset holds other classes.
        ConfigError: a pipeline object with ``engine="ray"``, or bad settings.
    """
    started = time.perf_counter()
    if per_class < 0 or batch_size < 1:
        raise ConfigError("per_class must be >= 0 and batch_size >= 1")
    # one request to an actor is one batch: the batches of a local run
    execution = ExecutionConfig(engine, workers, gpus_per_worker, ray_address, batch_size)
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
    folder = Path(images_dir).expanduser() if images_dir else default_images_dir(dataset)
    task = GenerateTask(
        model=None if is_pipeline else config.model,
        config=config,
        images_dir=str(folder.absolute()),  # the same folder for workers in another directory
        batch_size=batch_size,
        device=None if device is None else str(device),
        precision=precision,
        attention_slicing=attention_slicing,
        cpu_offload=cpu_offload,
        reuse_files=not is_pipeline,
    )
    # the model is loaded (or, on Ray, checked) before anything is written
    on_ray = execution.engine == "ray"
    task = _prepared(task, model, device, on_ray, todo=bool(jobs))
    remove_stale_temp_files(folder)
    report = GenerateReport(dataset, folder, requested=len(ontology) * per_class)
    report.already_done = report.requested - len(jobs)
    report.execution = execution.describe()
    samples = _Samples(ontology, jobs, config, report, progress)
    _run(task, jobs, execution, samples)
    if on_ray:
        report.execution["workers_ran"] = len(samples.workers)
    target = samples.dataset()
    report.per_class = _counts(target, config, ontology)
    report.seconds = time.perf_counter() - started
    settings = {**asdict(config), "per_class": per_class, "images_dir": str(folder)}
    record_run(target, "generate", settings, report.summary())
    logger.info("generate: %s", report.summary())
    return report


def _prepared(
    task: GenerateTask, model: Any, device: Any, on_ray: bool, todo: bool
) -> GenerateTask:
    """The task to run: on Ray, the one that travels (its model checked, not loaded); here,
    with the pipeline loaded (when there is something to do)."""
    if on_ray:
        remote = task.remote()  # refused when the pipeline is an object
        if todo:
            remote.check()
        return remote
    if not todo:
        return task
    options = {"attention_slicing": task.attention_slicing, "cpu_offload": task.cpu_offload}
    return replace(task, loaded=Generator.create(model, device, task.precision, **options))


def _run(
    task: GenerateTask, jobs: list[ImageJob], execution: ExecutionConfig, samples: _Samples
) -> None:
    """Runs the jobs through the engine; adds their samples every ``batch_size`` outcomes (on
    the local engine, each batch before the next starts) and what is left, even on error."""
    outcomes = execute(task, [job_item(job) for job in jobs], execution)
    try:
        with contextlib.closing(outcomes):
            for outcome in outcomes:
                samples.take(outcome)
                if samples.taken >= task.batch_size:
                    samples.flush()
    finally:
        samples.close()


class _Samples:
    """The samples of done jobs, added to the dataset a batch at a time.

    The dataset is opened (created, or its classes extended) when the first samples are added
    or the run ends, so a run that stops before any image was made writes nothing.
    """

    def __init__(
        self,
        ontology: Ontology,
        jobs: list[ImageJob],
        config: GenerationConfig,
        report: GenerateReport,
        progress: bool | ProgressCallback | None,
    ) -> None:
        self.ontology, self.config, self.report = ontology, config, report
        self.jobs = {job_key(job): job for job in jobs}
        self.bar = Progress(progress, len(jobs), "generate")
        self.opened: fo.Dataset | None = None
        self.pending: list[fo.Sample] = []
        self.taken = 0  # outcomes since the last flush
        self.workers: set[str] = set()  # who made them (``host:pid`` on Ray)

    def dataset(self) -> fo.Dataset:
        """The training dataset (opened now if no sample was added yet)."""
        if self.opened is None:
            self.opened = open_training_dataset(self.report.dataset, self.ontology)
            declare_fields(self.opened, FIELDS)
        return self.opened

    def take(self, outcome: Outcome) -> None:
        """Counts an outcome; a done image's sample waits for the next `flush`."""
        job, facts = self.jobs[outcome.key], outcome.facts
        self.taken += 1
        self.workers.add(outcome.worker)
        self.report.generation_seconds += float(facts.get("pipeline_seconds", 0.0))
        self.report.scheduler = self.report.scheduler or str(facts.get("scheduler", ""))
        if outcome.error is not None:
            logger.warning("could not make %s #%d: %s", job.label, job.index, outcome.error)
        elif facts.get("flagged"):
            self.report.flagged += 1
            logger.warning("safety checker blanked %s #%d: not added", job.label, job.index)
        else:
            self.pending.append(_sample(job, facts, self.config))

    def flush(self) -> None:
        """Adds the waiting samples, then moves the progress bar past their outcomes."""
        samples, taken = self.pending, self.taken
        self.pending, self.taken = [], 0
        if samples:
            self.dataset().add_samples(samples, progress=False)
            self.report.generated += len(samples)
        if taken:
            self.bar.update(taken)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.bar.close()


def _sample(job: ImageJob, facts: dict[str, Any], config: GenerationConfig) -> fo.Sample:
    """The sample of a done job, from its worker's facts (see `GenerateWorker.run`)."""
    return training_sample(
        Path(facts["path"]),
        job.label,
        width=int(facts["width"]),
        height=int(facts["height"]),
        num_channels=3,
        mime_type="image/png",
        size_bytes=int(facts["size_bytes"]),
        source=SOURCE,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        seed=job.seed,
        generation_index=job.index,
        model=config.model,
        steps=config.steps,
        guidance=float(config.guidance),
        scheduler=str(facts["scheduler"]),
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
