"""Errors that tell the user what went wrong and what to do about it.

Every error the library raises on purpose derives from :class:`USAMError`, so the CLI and the
operators can show its message as it is, without a traceback.
"""

from __future__ import annotations


class USAMError(Exception):
    """Base class: the message says what was wrong and what to do."""


class ConfigError(USAMError, ValueError):
    """A configuration value or file is invalid."""


class DatasetNotFoundError(USAMError, LookupError):
    """A FiftyOne dataset (or a field or tag in it) does not exist."""


class UnknownVariantError(USAMError, KeyError):
    """A SAM variant name is neither registered nor described by a config file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(USAMError, FileNotFoundError):
    """A model checkpoint is missing, unreadable, corrupt or does not fit the model."""


class StoreError(USAMError):
    """An EmbeddingStore is missing, corrupt, or was built with another spec."""


class ImageLoadError(USAMError, OSError):
    """An image could not be read or decoded."""


class WorkerError(USAMError, RuntimeError):
    """A worker of the ray engine failed in a way that is not one of our own errors."""
