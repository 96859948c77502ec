"""`execute`: a task's items through the engine an `ExecutionConfig` names."""

from __future__ import annotations

from collections.abc import Generator, Sequence

from fiftyone_usam.execution.local import run_locally
from fiftyone_usam.execution.ray import run_on_ray
from fiftyone_usam.execution.work import LOCAL, ExecutionConfig, Item, Outcome, Progressed, Task


def execute(
    task: Task,
    items: Sequence[Item],
    config: ExecutionConfig = LOCAL,
    progress: Progressed | None = None,
) -> Generator[Outcome, None, None]:
    """Runs ``task`` on ``items`` with ``config``'s engine; yields each item's outcome.

    Outcomes come as results become durable (not in item order on Ray). A failed item never
    stops the run. ``progress(n)``: ``n`` more items done with, batch by batch in this process,
    block by block (as their outcomes arrive) on Ray.
    """
    if config.engine == "ray":
        return run_on_ray(task, items, config, progress)
    return run_locally(task, items, progress)
