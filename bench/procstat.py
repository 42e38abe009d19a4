"""CPU time of a process read from ``/proc/<pid>/stat``, for the benchmarks' per-request and
per-event figures (``bench/pipeline.py``, ``bench/apply.py``, ``bench/http_api.py``; run as
scripts, so this folder is on their path).
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (with ``children``: and its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11 : 15 if children else 13])  # utime, stime, cu, cs
    return ticks / os.sysconf("SC_CLK_TCK")
