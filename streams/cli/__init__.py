"""The ``visrec`` command line: services, topics, workers, producing and reading events."""

from __future__ import annotations

import importlib
import importlib.util
import os

import click

# Subcommands live one module each and are imported lazily so that `visrec --help`
# and light commands do not pay for onnxruntime or torch imports.
_SUBCOMMANDS = {
    "services": "streams.cli.services",
    "topics": "streams.cli.topics",
    "produce": "streams.cli.produce",
    "subscribe": "streams.cli.subscribe",
    "worker": "streams.cli.worker",
    "recs": "streams.cli.recs",
    "serve": "streams.cli.serve",
    "model": "streams.cli.model",
    "demo": "streams.cli.demo",
    "status": "streams.cli.status",
    "eval": "streams.cli.eval",
    "dlq": "streams.cli.dlq",
    "signals": "streams.cli.signals",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, m in _SUBCOMMANDS.items() if importlib.util.find_spec(m))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _SUBCOMMANDS.get(cmd_name)
        if module is None:
            return None
        command = importlib.import_module(module).command
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="visrec")
def cli() -> None:
    """visrec: a streaming visual recommender on Kafka and Redis."""


def main() -> None:
    """Console-script entry point."""
    # The workers' matrix products are small (one batch of users at a time); BLAS thread
    # pools only fight the event loop, Kafka and Redis for the cores (measured: a 5000x128
    # product took 9 ms with OpenBLAS's default threads, 0.085 ms with one, on 2 shared
    # cores). Set before numpy is first imported; an explicit setting of the variable wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The same for faiss's OpenMP threads: waking a second thread for a batch's search costs
    # more than the search (the index, its fit and its builds run on one core here too).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cli()
