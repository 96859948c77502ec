"""`execute`: a task's items through the engine an `ExecutionConfig` names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from fiftyone_usam.execution.local import run_locally
from fiftyone_usam.execution.ray import run_on_ray
from fiftyone_usam.execution.work import LOCAL, ExecutionConfig, Item, Outcome, Task


def execute(
    task: Task,
    items: Sequence[Item],
    config: ExecutionConfig = LOCAL,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Iterator[Outcome]:
    """Runs ``task`` on ``items`` with ``config``'s engine; yields each item's outcome.

    Outcomes come as results become durable (not in item order on Ray). A failed item never
    stops the run. ``on_outcome`` sees each outcome too (progress).
    """
    outcomes: Iterable[Outcome] = (
        run_on_ray(task, items, config) if config.engine == "ray" else run_locally(task, items)
    )
    for outcome in outcomes:
        if on_outcome is not None:
            on_outcome(outcome)
        yield outcome
