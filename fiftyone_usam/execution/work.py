"""What an engine runs: a task (a picklable recipe), its workers, the items and their outcomes.

A stage describes its per-sample work as a `Task`: the settings and *what loads the model*
(a variant name, a checkpoint path, a hub id), never a loaded model. `engines.execute` hands the
task and the items to an engine:

- ``local`` starts one worker in this process and streams every item through it;
- ``ray`` starts ``workers`` Ray actors, each starting its own worker once (so each loads its
  model once), and sends them blocks of items.

A worker does the work and writes whole results itself (store shards, image files), then reports
one `Outcome` per item: done, with a few facts for the driver, or failed with the reason in the
words a local run uses. Only the driver touches the FiftyOne dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fiftyone_usam.errors import ConfigError

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")

Item = dict[str, Any]  # one unit of work, JSON-able: it travels to workers as it is
Progressed = Callable[[int], None]  # told how many more items are done with


@dataclass(frozen=True)
class Outcome:
    """What became of one item.

    Attributes:
        key: the item's ``key`` (a sample id, or a generation job's key).
        error: why it failed (the wording a local run reports), or None when it is done.
        facts: what the driver needs to record a done item (JSON-able).
        worker: which worker did it (``host:pid`` on Ray; empty in this process).
    """

    key: str
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    worker: str = ""

    @property
    def done(self) -> bool:
        return self.error is None


class Worker(Protocol):
    """A task's worker: its model loaded; does items and writes their results."""

    def run(self, items: Sequence[Item], progress: Progressed | None = None) -> Iterator[Outcome]:
        """Does ``items`` in order; an item's outcome comes once its result is durable.

        ``progress(n)`` is told as each ``n`` items are done with (before their results are
        durable, e.g. a batch embedded into a shard still being filled).
        """
        ...

    def close(self) -> None:
        """Frees the model."""
        ...


class Task(Protocol):
    """A stage's per-sample work: picklable settings and what loads the model."""

    @property
    def name(self) -> str:
        """What the work is (``embed``, ``generate``), for logs."""
        ...

    def start(self) -> Worker:
        """Loads the model (in the process that will do the work)."""
        ...

    def remote(self) -> Task:
        """The task as it travels to other processes: what loads the model, not a loaded one.

        Raises:
            ConfigError: the model exists only in this process (built in memory).
        """
        ...


@dataclass(frozen=True)
class ExecutionConfig:
    """Where the per-sample work of a stage runs.

    Attributes:
        engine: ``local`` (this process, the default) or ``ray`` (Ray actors).
        workers: Ray actors (each loads the model once); ignored by ``local``.
        gpus_per_worker: GPUs each actor asks Ray for; None: 1 when the cluster has GPUs,
            else 0.
        ray_address: the Ray cluster to join; None: ``RAY_ADDRESS`` if set, else a local Ray
            started for the run and stopped after it.
        block_size: items per request to an actor (a multiple of the stage's batch size, so
            the batches are the ones a local run makes).
    """

    engine: Engine = "local"
    workers: int = 1
    gpus_per_worker: float | None = None
    ray_address: str | None = None
    block_size: int = 16

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.block_size < 1:
            raise ConfigError(f"block_size must be at least 1, got {self.block_size}")

    @property
    def address(self) -> str | None:
        """The cluster to join: ``ray_address``, else ``RAY_ADDRESS``, else None (local)."""
        return self.ray_address or os.environ.get("RAY_ADDRESS") or None

    def options(self) -> dict[str, Any]:
        """The stages' keyword arguments for this config (``engine``, ``workers``, ...)."""
        return {
            "engine": self.engine,
            "workers": self.workers,
            "gpus_per_worker": self.gpus_per_worker,
            "ray_address": self.ray_address,
        }

    def describe(self) -> dict[str, Any]:
        """What a report records."""
        if self.engine == "local":
            return {"engine": "local", "workers": 1}
        return {"engine": "ray", "workers": self.workers, "address": self.address or "local"}


LOCAL = ExecutionConfig()
