"""The ``local`` engine: one worker in this process, every item streamed through it."""

from __future__ import annotations

from collections.abc import Generator, Sequence

from fiftyone_usam.execution.work import Item, Outcome, Progressed, Task


def run_locally(
    task: Task, items: Sequence[Item], progress: Progressed | None = None
) -> Generator[Outcome, None, None]:
    """Starts ``task``'s worker here and runs all ``items`` through it (today's behaviour: one
    stream, so the worker batches and overlaps across the whole run)."""
    if not items:
        return
    worker = task.start()
    try:
        yield from worker.run(items, progress)
    finally:
        worker.close()
