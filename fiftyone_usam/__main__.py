"""``python -m fiftyone_usam``: the same as the ``usam`` command."""

from fiftyone_usam.cli import main

main(prog_name="usam")
