"""Where a stage's per-sample work runs: the forms' engine fields and the stage's arguments.

The embed, predict, generate and run operators share these fields, named as the stages'
parameters: ``engine`` (local or ray), and with ray ``workers``, ``gpus_per_worker`` and
``ray_address``. The checks are the cheap ones a form may make: Ray importable on the server
(found, not imported), and the library's own rule for the values (`ExecutionConfig`); whether
the cluster answers is for the run to find out.
"""

import importlib.util
from collections.abc import Callable
from typing import Any

import fiftyone.operators.types as types

from fiftyone_usam.execution.ray import INSTALL_HINT
from fiftyone_usam.execution.work import ENGINES, ExecutionConfig

from .validation import invalidate, library_error, show

_STORAGE = (
    "Ray workers read the images by their file paths and write their results (store "
    "shards, generated images) themselves: on a cluster of several machines, both must be on "
    "storage every node sees. A worker that cannot read the first image or write the store "
    "fails the run at once, saying so."
)


def engine_inputs(inputs: types.Object, params: dict[str, Any], *, work: str) -> types.Property:
    """Adds the engine choice; with ``ray``, the worker count and (advanced) the GPUs per
    worker and the cluster's address, each checked by the library's rule.

    Args:
        inputs: the form's `types.Object`.
        params: the form's current values (``ctx.params``).
        work: what runs on the workers, for the engine's description ("SAM runs").

    Returns:
        The engine's property, for a form to add its own check to.
    """
    engine = inputs.enum(
        "engine",
        list(ENGINES),
        default="local",
        label="Engine",
        description=f"Where {work}. local: in this process; ray: on Ray actors, each "
        "loading the model once (one per GPU on a machine with several).",
    )
    if params.get("engine") != "ray":
        return engine
    invalidate(engine, ray_missing_error())
    workers = inputs.int(
        "workers",
        default=1,
        min=1,
        label="Workers",
        description="Ray actors, each with its own copy of the model (e.g. one per GPU).",
    )
    invalidate(workers, _value_error(params.get("workers"), lambda n: ExecutionConfig("ray", n)))
    gpus = inputs.float(
        "gpus_per_worker",
        min=0.0,
        label="GPUs per worker (advanced)",
        description="GPUs each actor asks Ray for. Default: 1 when the cluster has GPUs, else 0.",
    )
    invalidate(
        gpus, _value_error(params.get("gpus_per_worker"), lambda g: ExecutionConfig("ray", 1, g))
    )
    inputs.str(
        "ray_address",
        label="Ray address (advanced)",
        description="The cluster to join (what `ray start --head` printed, e.g. "
        "10.0.0.1:6379). Default: RAY_ADDRESS if set, else a local Ray started for the run.",
    )
    where = ExecutionConfig("ray", ray_address=params.get("ray_address") or None).address
    cluster = f"the Ray cluster at {where}" if where else "a local Ray started for this run"
    show(inputs, "ray_storage", f"Runs on {cluster}. {_STORAGE}", label="Ray")
    return engine


def engine_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The stage's ``engine``, ``workers``, ``gpus_per_worker`` and ``ray_address`` from the
    form's values (its defaults are not applied when an operator is called from Python)."""
    workers, gpus = params.get("workers"), params.get("gpus_per_worker")
    return {
        "engine": params.get("engine") or "local",
        "workers": 1 if workers is None else int(workers),
        "gpus_per_worker": None if gpus is None else float(gpus),
        "ray_address": params.get("ray_address") or None,
    }


def ray_missing_error() -> str | None:
    """Ray cannot be imported on the server (looked up, not imported: the form stays cheap)."""
    if importlib.util.find_spec("ray") is not None:
        return None
    return f"Ray is not installed on the server: install it with `{INSTALL_HINT}`, or choose local"


def _value_error(value: Any, check: Callable[[Any], object]) -> str | None:
    """The library's message for a numeric form value (others are FiftyOne's to flag)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return library_error(check, value)
