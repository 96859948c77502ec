"""The generate stage's per-image work: a diffusers pipeline loaded once, images in batches.

`GenerateTask` is what travels to a worker (what loads the pipeline: a hub id or a pipeline
directory, with its device, precision and memory options; the `GenerationConfig`; the images
folder and the batch size); `GenerateWorker` loads the pipeline once and makes the images of each
stream of jobs it is given batch by batch, saving each atomically under `image_path`. A job's
outcome comes once its image is on disk, with what the driver needs to add its sample.

A job whose image file already exists is not made again, and is reported done with facts read
from the file: a block retried after its worker died, or a run killed between saving a batch's
images and adding their samples, is neither lost nor made twice. That is sound because the
writes are atomic (an existing file is whole) and the file's name fixes how its pixels were
made: ``<class slug>-<recipe>-<index>.png``, where the recipe hashes the model's name, the class,
its prompts and negative prompt, steps, guidance, scheduler, size and the run's seed (two classes
of one slug differ in recipe), and the image's seed derives from (run seed, class, index). The
model is identified by its name (a hub id or a directory's path), not by its weights: a pipeline
object passed in memory is named by its class when it has no ``name_or_path``, so its files are
never reused (``reuse_files=False``) and are made again, as before.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.devices import PRECISIONS, Precision
from fiftyone_usam.errors import CheckpointError, ConfigError
from fiftyone_usam.execution.work import Item, Outcome, Progressed
from fiftyone_usam.files import save_image_atomic
from fiftyone_usam.sources.generation import Generator
from fiftyone_usam.sources.jobs import GenerationConfig, ImageJob, image_path
from fiftyone_usam.sources.pipelines import check_source, pipeline_load_error

if TYPE_CHECKING:
    from PIL import Image

_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(ImageJob))


def job_key(job: ImageJob) -> str:
    """A job's stable key, unique within a dataset: ``<class>#<index>@<recipe>``."""
    return f"{job.label}#{job.index}@{job.recipe}"


def job_item(job: ImageJob) -> Item:
    """The JSON-able item of ``job`` (its fields and ``key``), as it travels to a worker."""
    return {"key": job_key(job), **dataclasses.asdict(job)}


def item_job(item: Item) -> ImageJob:
    """The `ImageJob` an item (`job_item`) describes."""
    return ImageJob(**{name: item[name] for name in _JOB_FIELDS})


@dataclass(frozen=True)
class GenerateTask:
    """What a worker needs to make images of jobs.

    Attributes:
        model: the hub id or the pipeline directory's absolute path each worker loads; None
            when the pipeline was passed as an object (then only ``loaded`` has it).
        config: what decides the pixels (steps, guidance, scheduler choice, size, seed).
        images_dir: where the images are written (``image_path``); on a cluster, a folder
            every node sees.
        batch_size: prompts per pipeline call.
        device: torch device; None: CUDA if the worker has one, else the CPU.
        precision: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` or ``bf16``.
        attention_slicing: slice attention (less GPU memory).
        cpu_offload: keep sub-models on the CPU until they run (needs ``accelerate``).
        reuse_files: report a job whose image file exists done instead of making it again
            (see the module's docstring; False for a pipeline passed as an object).
        loaded: a `Generator` already created in this process (the local engine uses it;
            never sent).
    """

    model: str | None
    config: GenerationConfig
    images_dir: str
    batch_size: int = 4
    device: str | None = None
    precision: Precision = "auto"
    attention_slicing: bool = False
    cpu_offload: bool = False
    reuse_files: bool = True
    loaded: Generator | None = field(default=None, compare=False, repr=False)
    name: str = "generate"

    def remote(self) -> GenerateTask:
        """This task without its loaded pipeline, which each worker loads from ``model``.

        Raises:
            ConfigError: the pipeline was passed as an object, so there is nothing a worker
                could load.
        """
        if self.model is None:
            raise ConfigError(
                "the ray engine loads the text-to-image pipeline on each worker from a hub id or "
                "a pipeline directory; a pipeline object in memory cannot travel. Save it with "
                "pipe.save_pretrained(DIR) in a folder every Ray node sees and pass model=DIR "
                "(--model DIR), or use engine='local'"
            )
        return dataclasses.replace(self, loaded=None)

    def check(self) -> None:
        """What a driver can check without loading the pipeline: the precision's name, and
        that ``model`` is a pipeline directory (with ``model_index.json``) or a hub id whose
        ``model_index.json`` comes from the cache or the hub (a small file, no weights).

        Raises:
            CheckpointError: no such directory, no pipeline in it, or the hub id cannot be
                reached (the message says how to get the weights).
            ConfigError: an unknown precision.
        """
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"
            )
        if self.model is None:
            return
        source = check_source(self.model)
        if Path(source).is_dir():
            return
        from diffusers import DiffusionPipeline

        try:
            DiffusionPipeline.load_config(source)
        except (OSError, ValueError) as e:
            raise pipeline_load_error(self.model, e) from None

    def start(self) -> GenerateWorker:
        """Loads the pipeline here (unless already loaded) and sets its scheduler."""
        runner = self.loaded
        if runner is None:
            if self.model is None:
                raise CheckpointError("this generate task has neither a model nor a pipeline")
            runner = Generator.create(
                self.model,
                self.device,
                self.precision,
                attention_slicing=self.attention_slicing,
                cpu_offload=self.cpu_offload,
            )
        return GenerateWorker(self, runner, runner.use_scheduler(self.config.scheduler))


class GenerateWorker:
    """A pipeline loaded once; makes the images of streams of jobs into the images folder."""

    def __init__(self, task: GenerateTask, runner: Generator, scheduler: str) -> None:
        self.task, self.runner, self.scheduler = task, runner, scheduler
        self.folder = Path(task.images_dir)

    def close(self) -> None:
        del self.runner

    def run(self, items: Sequence[Item], progress: Progressed | None = None) -> Iterator[Outcome]:
        """Makes the images of ``items`` (`job_item`s), ``batch_size`` items at a time;
        ``progress`` is told each batch's size once its images are saved.

        Each batch's images are saved before its outcomes are yielded, one per item in order:
        exactly ``batch_size`` outcomes per batch (fewer in the last), so a driver that records
        every ``batch_size`` outcomes records each batch before the next one starts (the local
        engine runs the next batch only when asked for its next outcome).

        Facts of a done item: ``path``, ``width``, ``height``, ``size_bytes``, ``scheduler``
        (the class used), ``flagged`` (the safety checker blanked it: no file, nothing else),
        ``pipeline_seconds`` (its share of its batch's pipeline call; 0 for a file already
        written, which also has ``already_written``).
        """
        size = max(1, self.task.batch_size)
        for start in range(0, len(items), size):
            jobs = [item_job(item) for item in items[start : start + size]]
            outcomes = self._batch(jobs)
            if progress is not None:
                progress(len(jobs))
            yield from outcomes

    def _batch(self, jobs: list[ImageJob]) -> list[Outcome]:
        paths = [image_path(self.folder, job) for job in jobs]
        facts: dict[int, dict[str, Any]] = {}
        for k, path in enumerate(paths):
            written = self._written(path) if self.task.reuse_files else None
            if written is not None:
                facts[k] = written
        todo = [k for k in range(len(jobs)) if k not in facts]
        if todo:
            tick = time.perf_counter()
            images, flagged = self.runner.run([jobs[k] for k in todo], self.task.config)
            share = (time.perf_counter() - tick) / len(todo)
            for k, image, blanked in zip(todo, images, flagged, strict=True):
                if blanked:
                    facts[k] = {"flagged": True, "scheduler": self.scheduler}
                else:
                    save_image_atomic(paths[k], image)
                    facts[k] = self._facts(paths[k], image)
                facts[k]["pipeline_seconds"] = share
        return [Outcome(job_key(job), facts=facts[k]) for k, job in enumerate(jobs)]

    def _written(self, path: Path) -> dict[str, Any] | None:
        """The facts of an image file already written, or None if there is none to reuse."""
        from PIL import Image

        if not path.is_file():
            return None
        try:
            with Image.open(path) as image:
                facts = self._facts(path, image)
        except OSError:  # not an image (not ours: ours are written atomically): make it again
            return None
        return {**facts, "pipeline_seconds": 0.0, "already_written": True}

    def _facts(self, path: Path, image: Image.Image) -> dict[str, Any]:
        return {
            "path": str(path),
            "width": image.width,
            "height": image.height,
            "size_bytes": path.stat().st_size,
            "scheduler": self.scheduler,
            "flagged": False,
        }
