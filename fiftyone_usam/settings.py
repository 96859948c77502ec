"""FiftyOne's user settings that the library follows: whether to show progress bars, and where
FiftyOne's model zoo keeps its checkpoints. Reading them is the foundation's only contact with
FiftyOne (no dataset is touched here); FiftyOne is imported when a setting is first read.
"""

from __future__ import annotations

from pathlib import Path


def show_progress_bars() -> bool:
    """FiftyOne's ``show_progress_bars`` setting."""
    import fiftyone as fo

    return bool(fo.config.show_progress_bars)


def model_zoo_dir() -> Path | None:
    """FiftyOne's model zoo directory, where its SAM zoo models keep their checkpoints."""
    try:
        import fiftyone as fo
    except ImportError:  # pragma: no cover - fiftyone is a dependency
        return None
    return Path(fo.config.model_zoo_dir).expanduser()
