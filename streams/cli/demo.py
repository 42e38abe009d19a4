"""``visrec demo``: the README's main job."""

from __future__ import annotations

import os
from pathlib import Path

import click

from streams.settings import Settings


@click.command("demo")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("out/demo"), show_default=True
)
@click.option(
    "--short",
    is_flag=True,
    default=lambda: os.environ.get("VISREC_DEMO_SHORT") == "1",
    help="Smaller catalogue and fewer clicks (CI). Also VISREC_DEMO_SHORT=1.",
)
@click.option("--keep", is_flag=True, help="Leave Kafka and Redis running afterwards.")
def command(out_dir: Path, short: bool, keep: bool) -> None:
    """Run the pipeline on real photos with scripted shoppers; write contact sheets + HTML."""
    from streams.tools.demo.run import run_demo

    run_demo(Settings(), out_dir, short=short, keep=keep)
