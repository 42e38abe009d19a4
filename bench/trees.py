"""Measuring this tree against the code of another git revision (``--compare REF``).

A benchmark that takes ``--compare REF`` checks REF out into a temporary worktree and runs one
measurement at a time on each side, alternating rounds in one run, so that the box's drift
falls on both. Each measurement is a subprocess importing only its own tree's code: the
benchmark script is copied into that tree's ``bench/`` and run with ``PYTHONPATH`` set to it.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """A detached worktree of ``ref``, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="visrec-compare-"))
    tree = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
        shutil.rmtree(tmp, ignore_errors=True)


def run_in(
    tree: Path, script: str, argv: Sequence[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run the benchmark ``script`` (a path) on ``tree``'s code; its last stdout line as JSON."""
    copy = tree / "bench" / f"_compare_{Path(script).name}"
    shutil.copyfile(script, copy)
    helper = tree / "bench" / Path(__file__).name  # older trees lack this module
    added = not helper.exists()
    if added:
        shutil.copyfile(__file__, helper)
    try:
        out = subprocess.run(
            [sys.executable, str(copy), *argv],
            cwd=tree,
            env={**os.environ, **(env or {}), "PYTHONPATH": str(tree)},
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        copy.unlink()
        if added:
            helper.unlink()
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over rounds."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}
