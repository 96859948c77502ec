"""Options and output shared by several ``usam`` commands."""

from __future__ import annotations

from collections.abc import Mapping

import click

MAX_SHOWN = 20

device_option = click.option(
    "--device",
    default=None,
    help="torch device, e.g. cpu, cuda, cuda:1. Default: cuda if available, else cpu.",
)
view_tag_option = click.option("--view-tag", default=None, help="Only the samples with this tag.")


def echo_problems(title: str, problems: Mapping[str, str]) -> None:
    """Lists ``sample id: reason`` lines on stderr (the first `MAX_SHOWN` of them)."""
    if not problems:
        return
    click.echo(f"{len(problems)} {title}:", err=True)
    for key, reason in list(problems.items())[:MAX_SHOWN]:
        click.echo(f"  {key}: {reason}", err=True)
    if len(problems) > MAX_SHOWN:
        click.echo(f"  ... and {len(problems) - MAX_SHOWN} more", err=True)
