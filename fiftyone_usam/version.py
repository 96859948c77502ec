"""The package version, in one place (imported by the checkpoint writer, the fetcher's
user agent and the CLI's ``--version``)."""

__version__ = "0.1.0"
