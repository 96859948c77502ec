"""The ``ray`` engine: Ray Data with an actor pool; each actor starts the task's worker once.

The driver cuts the items into blocks of ``block_size`` (one dataset row each, so an actor gets
exactly the batches a local run makes) and streams them through
``map_batches(TaskActor, concurrency=workers, num_gpus=..., batch_size=1)``. Ray restarts an
actor that dies and retries its block; a worker skips the items whose results are already
durable (see each task), so a retried block is neither lost nor written twice.

Ray joins the cluster at ``ExecutionConfig.address``, or starts a local one for the run and
stops it after. ``import ray`` happens only here, inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Generator, Iterator, Sequence
from typing import Any

from fiftyone_usam.errors import ConfigError, USAMError, WorkerError
from fiftyone_usam.execution.work import ExecutionConfig, Item, Outcome, Progressed, Task

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "fiftyone-usam[ray]"'
ACTOR_START_SECONDS = 600  # how long the workers may take to start (models load in them)
MAX_RETRIES = 3  # restarts of a dead worker, and retries of its block


def run_on_ray(
    task: Task,
    items: Sequence[Item],
    config: ExecutionConfig,
    progress: Progressed | None = None,
) -> Generator[Outcome, None, None]:
    """Runs ``task`` on Ray actors; yields each item's outcome as its block finishes.

    Raises:
        ConfigError: Ray is not installed, the address cannot be joined, or the task holds a
            model that cannot travel (a model built in memory).
    """
    if not items:
        return
    remote = task.remote()  # refused before Ray starts when the model cannot travel
    ray = import_ray()
    started_here = connect(ray, config.address)
    try:
        for outcome in _stream(ray, remote, items, config):
            if progress is not None:
                progress(1)
            yield outcome
    finally:
        if started_here:
            ray.shutdown()


def import_ray() -> Any:
    """``ray`` with Ray Data, or a `ConfigError` that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ConfigError(
            f"the ray engine needs Ray Data ({e}): install it with `{INSTALL_HINT}`, or run "
            "with --engine local"
        ) from None
    return ray


def connect(ray: Any, address: str | None) -> bool:
    """Joins the cluster at ``address`` (None: a local Ray started now).

    Returns:
        Whether this call started Ray (so the run stops it after).
    """
    if ray.is_initialized():
        if address:
            logger.warning("Ray is already running in this process: using it, not %s", address)
        return False
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    except Exception as e:
        raise _address_error(address, f"{type(e).__name__}: {e}") from None
    return True


def _address_error(address: str | None, why: str) -> ConfigError:
    """The one message for a Ray that cannot be started or joined."""
    where = f"the Ray cluster at {address!r}" if address else "a local Ray"
    return ConfigError(
        f"cannot start or join {where} ({why}). Check --ray-address (or RAY_ADDRESS): it is "
        "what `ray start --head` printed, e.g. 10.0.0.1:6379 or ray://host:10001; leave both "
        "unset to run on a local Ray"
    )


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuses, within ``timeout`` seconds, an address nothing listens on (Ray itself would
    retry for minutes). ``auto`` and addresses without a port are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise _address_error(address, f"nothing answers there: {e}") from None


def gpus_per_worker(ray: Any, config: ExecutionConfig) -> float:
    """``config.gpus_per_worker``, else 1 when the cluster has GPUs, else 0."""
    if config.gpus_per_worker is not None:
        return float(config.gpus_per_worker)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


class TaskActor:
    """A Ray Data actor: starts the task's worker once, then does one block per call."""

    def __init__(self, task: Task) -> None:
        import ray

        if not ray.get_gpu_ids():  # given no GPU: stay off the node's GPUs (Ray leaves them)
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.error: USAMError | None = None
        try:
            self.worker = task.start()
        except USAMError as e:  # raised as itself with the first block (Ray would wrap it)
            self.error = e

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        if self.error is not None:
            raise self.error
        items = [item for block in batch["block"] for item in json.loads(str(block))]
        keys, errors, facts = [], [], []
        for outcome in self.worker.run(items):
            keys.append(outcome.key)
            errors.append(outcome.error or "")
            facts.append(json.dumps(outcome.facts))
        return {"key": keys, "error": errors, "facts": facts, "worker": [self.name] * len(keys)}


def _stream(
    ray: Any, task: Task, items: Sequence[Item], config: ExecutionConfig
) -> Iterator[Outcome]:
    blocks = [
        {"block": json.dumps(list(items[i : i + config.block_size]))}
        for i in range(0, len(items), config.block_size)
    ]
    gpus = gpus_per_worker(ray, config)
    workers = max(1, min(config.workers, len(blocks)))
    logger.info(
        "%s on Ray: %d item(s) in %d block(s), %d worker(s), %g GPU(s) each",
        task.name, len(items), len(blocks), workers, gpus,
    )  # fmt: skip
    try:
        with _data_context(ray):
            dataset = ray.data.from_items(blocks, override_num_blocks=len(blocks))
            results = dataset.map_batches(
                TaskActor,
                fn_constructor_args=(task,),
                batch_size=1,
                # one block at a time per actor: blocks spread over all workers
                compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                num_gpus=gpus,
                num_cpus=1,
                batch_format="default",
                max_restarts=MAX_RETRIES,  # a worker killed again and again fails the run
                max_task_retries=MAX_RETRIES,
            )
            for row in results.iter_rows():
                facts = json.loads(str(row["facts"]))
                yield Outcome(str(row["key"]), str(row["error"]) or None, facts, str(row["worker"]))
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(
            f"Ray could not start {workers} worker(s) with {gpus:g} GPU(s) and 1 CPU each "
            f"within {ACTOR_START_SECONDS} s: the cluster lacks the resources (see `ray "
            "status`). Lower --workers or --gpus-per-worker, or add nodes"
        ) from None
    except ray.exceptions.RayError as e:
        raise worker_error(task, e) from None


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """Ray Data settings for our runs, restored after (the context is process-wide): no Ray
    progress bars (the stage shows its own), every worker started before the first block, a
    worker's own exception raised as it is (not wrapped in Ray's)."""
    context = ray.data.DataContext.get_current()
    ours = {
        "enable_progress_bars": False,
        "wait_for_min_actors_s": ACTOR_START_SECONDS,
        "raise_original_map_exception": True,
    }
    saved = {name: getattr(context, name) for name in ours}
    for name, value in ours.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


def worker_error(task: Task, error: BaseException) -> USAMError:
    """What a failed worker raised (our own error, e.g. a checkpoint a node cannot read), or
    a `WorkerError` naming Ray's, instead of Ray's wrapped traceback."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, USAMError):
            return current
        stack += [getattr(current, "cause", None), current.__cause__, current.__context__]
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return WorkerError(
        f"a Ray worker of {task.name} failed: {lines[-1] if lines else type(error).__name__}. "
        "Its full log is under the Ray session's logs (`ray logs` on the head node)"
    )
