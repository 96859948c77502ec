"""Progress for long runs: a tqdm bar for people, or a ``(done, total)`` callback for operators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fiftyone_usam.settings import show_progress_bars

ProgressCallback = Callable[[int, int], None]


class Progress:
    """Counts finished units of work and reports them to a bar or a callback.

    Args:
        progress: True for a tqdm bar, False for nothing, None to follow FiftyOne's
            ``show_progress_bars``, or a callable receiving ``(done, total)`` after each update.
            An exception raised by the callable stops the run (after the finished work is saved).
        total: units of work expected.
        desc: the bar's label.
        unit: what is counted, for the bar.
    """

    def __init__(
        self, progress: bool | ProgressCallback | None, total: int, desc: str, unit: str = "img"
    ) -> None:
        self.total = total
        self.done = 0
        self._callback: ProgressCallback | None = None
        self._bar: Any = None
        if callable(progress):
            self._callback = progress
        elif _show_bar(progress):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit=unit, desc=desc)

    def update(self, n: int) -> None:
        """Records ``n`` more finished units."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def advance_to(self, done: int) -> None:
        """Records that ``done`` units are finished in all."""
        self.update(done - self.done)

    def close(self) -> None:
        """Closes the bar (if any)."""
        if self._bar is not None:
            self._bar.close()


def _show_bar(progress: bool | None) -> bool:
    return show_progress_bars() if progress is None else bool(progress)
