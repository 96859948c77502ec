"""The ``usam`` command line: each command is argument plumbing around one library call.

Library errors (`USAMError`) are shown as one readable line and exit with status 1.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from fiftyone_usam.cli.adapt import adapt_command
from fiftyone_usam.cli.baselines import baseline_command
from fiftyone_usam.cli.benchmarks import import_coco_command, import_voc_command
from fiftyone_usam.cli.crawl import crawl_command
from fiftyone_usam.cli.embed import embed_command
from fiftyone_usam.cli.evaluate import evaluate_command
from fiftyone_usam.cli.generate import generate_command
from fiftyone_usam.cli.predict import predict_command
from fiftyone_usam.cli.refine import refine_command
from fiftyone_usam.cli.run import demo_command, run_command
from fiftyone_usam.cli.train import train_command
from fiftyone_usam.errors import USAMError
from fiftyone_usam.version import __version__


class _Group(click.Group):
    """Turns library errors into clean CLI errors (no traceback, non-zero exit)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in pipeline order, not alphabetical

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USAMError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="usam")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """U-SAM for FiftyOne: SAM as a semantic segmenter for the classes you name.

    \b
    The stages, in order:
      generate | crawl   training images of each class (Stable Diffusion | the web)
      embed              SAM mask embeddings of a dataset into a store
      train              the semantic head, from the training images' labels
      adapt              the head adapted to your images, without labels
      predict            semantic and instance masks of your classes on any dataset
      refine             the head learns from the corrections made in the App, relabels
      baseline           SAM+CLIP or Otsu labels, the paper's baselines, to compare with
      import-voc | import-coco   benchmark datasets with ground truth (PASCAL VOC | COCO)
      evaluate           mIoU, mAP50 and boundary F against ground truth, stored for the App
    Or all of them at once:
      run                class names + your dataset -> labelled (and evaluated) dataset
      demo               the whole chain offline with tiny random models (a first look)
    Run `usam COMMAND --help` for each command's options.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fiftyone_usam").setLevel(level)


for command in (
    generate_command,
    crawl_command,
    embed_command,
    train_command,
    adapt_command,
    predict_command,
    refine_command,
    baseline_command,
    import_voc_command,
    import_coco_command,
    evaluate_command,
    run_command,
    demo_command,
):
    main.add_command(command)
