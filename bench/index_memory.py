"""Resident memory of the interest worker's item index, measured, and extrapolated to 1M items.

Each configuration runs in a fresh child process that loads ``--n`` random unit vectors (ids
and categories like the worker's) into the real ``models.index`` index in chunks, waits for any
background build, and reads its own resident set size (``VmRSS``) and peak (``VmHWM``) from
``/proc/self/status`` (after ``malloc_trim``, so freed temporaries do not count). Memory per
item is the RSS growth over the warmed-up empty process; the baseline printed beside it is a
bare float32 numpy matrix of the same vectors, measured the same way. With two or more sizes
the slope between the smallest and largest is printed too: bytes per item without fixed costs.

    .venv/bin/python bench/index_memory.py                         # 100k items, dims 512 and 1280
    .venv/bin/python bench/index_memory.py --n 50000 100000        # two sizes: checks linearity
    .venv/bin/python bench/index_memory.py --kinds exact --dims 384

Kinds: ``matrix`` (the baseline), ``exact`` (``ExactIndex``: the store below
``VISREC_INTEREST__ANN_THRESHOLD``), ``worker`` (``make_index(50_000)`` as the worker builds it:
exact, then an HNSW graph built in a background thread once 50k items are in). The index keeps
float32 vectors only (``VISREC_EMBED__VECTOR_DTYPE=float16`` halves Redis and Kafka, not this).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 4096
CATEGORIES = [f"category-{i}" for i in range(50)]


def _trim() -> None:
    # Freed numpy temporaries stay in glibc's heap (its mmap threshold adapts upwards) and
    # would count as the index's; give them back so RSS is what is alive.
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _chunks(n: int, dim: int, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        x = rng.standard_normal((rows, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield start, x


def child(kind: str, dim: int, n: int) -> dict[str, object]:
    """Build one index in this process; return its measured memory."""
    from models.index import ExactIndex, ItemIndex, make_index

    for _ in _chunks(CHUNK, dim, seed=1):  # warm-up: numpy's and the generator's first costs
        pass
    _trim()
    base_kib = _status_kib("VmRSS")
    t0 = time.perf_counter()
    reported: int
    held: object
    if kind == "matrix":
        matrix = np.empty((n, dim), dtype=np.float32)
        for start, x in _chunks(n, dim):
            matrix[start : start + len(x)] = x
        reported, held = matrix.nbytes, matrix
        backend = "numpy"
    else:
        index: ItemIndex = ExactIndex() if kind == "exact" else make_index(50_000)
        for start, x in _chunks(n, dim):
            ids = [f"item-{i:08d}" for i in range(start, start + len(x))]
            cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(start, start + len(x))]
            index.upsert_many(ids, x, model_id="bench", categories=cats)
        index.wait_idle()
        reported, held, backend = index.memory_bytes(), index, index.backend or "-"
    build_s = time.perf_counter() - t0
    _trim()
    steady_kib = _status_kib("VmRSS")
    peak_kib = _status_kib("VmHWM")
    assert held is not None
    return {
        "kind": kind,
        "backend": backend,
        "dim": dim,
        "n": n,
        "build_s": build_s,
        "rss_bytes": (steady_kib - base_kib) * 1024,
        "peak_bytes": (peak_kib - base_kib) * 1024,
        "reported_bytes": reported,
    }


@dataclass(frozen=True)
class Measured:
    kind: str
    backend: str
    dim: int
    n: int
    build_s: float
    rss_bytes: int
    peak_bytes: int
    reported_bytes: int


def measure(kind: str, dim: int, n: int) -> Measured:
    """Run ``child`` in a fresh interpreter so nothing earlier inflates its RSS."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(dim), str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Measured(**json.loads(out.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 1280])
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["matrix", "exact", "worker"],
        choices=("matrix", "exact", "worker"),
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DIM", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, dim, n = args.child
        print(json.dumps(child(kind, int(dim), int(n))))
        return

    print(
        f"{'kind':<7} {'backend':<7} {'dim':>5} {'items':>8} {'build s':>8} {'RSS MiB':>8} "
        f"{'B/item':>7} {'x matrix':>8} {'peak B/item':>11} {'reported B/item':>15} "
        f"{'GiB per 1M':>10}"
    )
    results: list[Measured] = []
    for dim in args.dims:
        for n in args.n:
            baseline: float | None = None
            for kind in args.kinds:
                r = measure(kind, dim, n)
                results.append(r)
                per_item = r.rss_bytes / n
                if kind == "matrix":
                    baseline = per_item
                ratio = f"{per_item / baseline:8.2f}" if baseline else f"{'-':>8}"
                print(
                    f"{kind:<7} {r.backend:<7} {dim:>5} {n:>8} {r.build_s:8.1f} "
                    f"{r.rss_bytes / 2**20:8.0f} {per_item:7.0f} {ratio} "
                    f"{r.peak_bytes / n:11.0f} {r.reported_bytes / n:15.0f} "
                    f"{per_item * 1e6 / 2**30:10.2f}",
                    flush=True,
                )
    if len(args.n) > 1:
        print("\nslope between the smallest and largest size (fixed costs cancel):")
        lo, hi = min(args.n), max(args.n)
        for dim in args.dims:
            for kind in args.kinds:
                a, b = (
                    next(r for r in results if (r.kind, r.dim, r.n) == (kind, dim, size))
                    for size in (lo, hi)
                )
                slope = (b.rss_bytes - a.rss_bytes) / (hi - lo)
                print(
                    f"{kind:<7} dim {dim:>5}: {slope:7.0f} B/item = {slope * 1e6 / 2**30:.2f} GiB "
                    f"per 1M items (vectors alone {dim * 4 * 1e6 / 2**30:.2f} GiB)"
                )


if __name__ == "__main__":
    main()
