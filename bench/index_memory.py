"""Resident memory of the interest worker's item index, measured, and extrapolated to 1M items.

Each configuration runs in a fresh child process that fits its space (if any) on a sample of
the catalogue, frees the sample, loads ``--n`` unit vectors (ids like the worker's) into a
``models.index.ItemIndex`` in chunks, and reads its own resident set size (``VmRSS``) and peak
(``VmHWM``) from ``/proc/self/status`` (after ``malloc_trim``, so freed temporaries do not
count). Memory per item is the RSS growth over the warmed-up empty process (the fitted space
included); the baseline printed beside it is a bare float32 numpy matrix of the same vectors,
measured the same way. With two or more sizes the slope between the smallest and largest is
printed too: bytes per item without fixed costs (the space, the IVF's centroids, imports).

    .venv/bin/python bench/index_memory.py                        # 100k and 300k x 1280
    .venv/bin/python bench/index_memory.py --n 100000 1000000     # full scale (matrix: 4.8 GiB)
    .venv/bin/python bench/index_memory.py --kinds matrix raw --n 20000 40000 --data random
    .venv/bin/python bench/index_memory.py --n 20000 40000 --json /tmp/index_memory.json

Kinds: ``matrix`` (the baseline: the full-dimension vectors as one float32 matrix), ``raw``
(``ItemIndex(raw_space)``: float32 rows of the encoder's dim, what a worker holds before a space
is fitted; 1.5 GB at 300k x 1280), ``compact`` (a fitted space, ``--space-dims`` 8-bit codes,
exact search), ``ivf`` (the same with an IVF, as the worker holds a catalogue of 50,000 items
or more). Spaces are fitted on ``min(n, --fit-sample)`` items of the catalogue (whole chunks
drawn at random; the worker samples 50,000). Data: ``clustered`` (default; the generator of
``bench/pipeline.py``) or ``random`` unit vectors. Target: the worker's index (``ivf``) at 1M
items holds <= 600 bytes per item.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from vectors import catalogue_vectors

CHUNK = 4096
TARGET_BYTES_PER_ITEM = 600
HUGE = 2**62  # ivf_min_items that no catalogue reaches: exact search


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


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _chunk(n: int, dim: int, data: str, number: int) -> np.ndarray:
    """Chunk ``number`` of the catalogue (its own seed: any chunk can be made on its own)."""
    rows = min(CHUNK, n - number * CHUNK)
    return catalogue_vectors(np.random.default_rng([0, number]), rows, dim, data)


def _chunks(n: int, dim: int, data: str) -> Iterator[tuple[int, np.ndarray]]:
    for number in range(-(-n // CHUNK)):
        yield number * CHUNK, _chunk(n, dim, data, number)


def _sample(n: int, dim: int, data: str, size: int) -> np.ndarray:
    """``min(n, size)`` items of the catalogue: whole chunks drawn at random."""
    chunks = -(-n // CHUNK)
    picked = np.random.default_rng(1).permutation(chunks)[: -(-min(n, size) // CHUNK)]
    return np.concatenate([_chunk(n, dim, data, int(c)) for c in sorted(picked)])[:size]


def child(kind: str, dim: int, n: int, data: str, dims: int, fit_sample: int) -> dict[str, object]:
    """Build one index in this process; return its measured memory."""
    from models.index import FitParams, ItemIndex, fit_space, raw_space

    catalogue_vectors(np.random.default_rng(1), CHUNK, dim, data)  # warm-up: first-call costs
    _trim()
    base_kib = _status_kib("VmRSS")
    fit_s = 0.0
    fit_peak_kib = base_kib
    held: object
    if kind == "matrix":
        t0 = time.perf_counter()
        matrix = np.empty((n, dim), dtype=np.float32)
        for start, x in _chunks(n, dim, data):
            matrix[start : start + len(x)] = x
        del x  # the last chunk: not the index's
        build_s = time.perf_counter() - t0
        reported, held, note = matrix.nbytes, matrix, "numpy"
    else:
        if kind == "raw":
            space = raw_space("bench", dim)
        else:
            sample = _sample(n, dim, data, fit_sample)
            params = FitParams(dims=dims, ivf_min_items=0 if kind == "ivf" else HUGE)
            t0 = time.perf_counter()
            space = fit_space("bench", sample, n, params)
            fit_s = time.perf_counter() - t0
            del sample  # the space keeps no reference to it; nothing else may
            _trim()
            fit_peak_kib = _status_kib("VmHWM")
            _reset_peak()
        index = ItemIndex(space)
        t0 = time.perf_counter()
        for start, x in _chunks(n, dim, data):
            index.upsert_many([f"item-{i:08d}" for i in range(start, start + len(x))], x)
        del x
        build_s = time.perf_counter() - t0
        reported, held = index.memory_bytes(), index
        note = f"{index.kind} d{space.dim}"
        if space.ivf is not None:
            note += f" nprobe {space.ivf.nprobe}"
    _trim()
    steady_kib = _status_kib("VmRSS")
    peak_kib = _status_kib("VmHWM")
    assert held is not None
    return {
        "kind": kind,
        "note": note,
        "data": data,
        "dim": dim,
        "n": n,
        "fit_s": fit_s,
        "build_s": build_s,
        "rss_bytes": (steady_kib - base_kib) * 1024,
        "peak_bytes": (peak_kib - base_kib) * 1024,
        "fit_peak_bytes": (fit_peak_kib - base_kib) * 1024,
        "reported_bytes": reported,
    }


@dataclass(frozen=True)
class Measured:
    kind: str
    note: str
    data: str
    dim: int
    n: int
    fit_s: float
    build_s: float
    rss_bytes: int
    peak_bytes: int
    fit_peak_bytes: int
    reported_bytes: int


def measure(kind: str, dim: int, n: int, data: str, dims: int, fit_sample: int) -> Measured:
    """Run ``child`` in a fresh interpreter so nothing earlier inflates its RSS."""
    spec = [kind, str(dim), str(n), data, str(dims), str(fit_sample)]
    # One BLAS thread, as the worker runs (streams/cli): OpenBLAS gives each extra thread a
    # buffer of tens of MiB on first use, which would land in whichever figure came first.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    out = subprocess.run(
        [sys.executable, __file__, "--child", *spec],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return Measured(**json.loads(out.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[1280], help="vector dims")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["matrix", "compact", "ivf"],
        choices=("matrix", "raw", "compact", "ivf"),
    )
    parser.add_argument("--data", choices=("random", "clustered"), default="clustered")
    parser.add_argument("--space-dims", type=int, default=256, help="dimensions a space keeps")
    parser.add_argument("--fit-sample", type=int, default=50_000, help="as the worker's")
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, dim, n, data, dims, fit_sample = args.child
        print(json.dumps(child(kind, int(dim), int(n), data, int(dims), int(fit_sample))))
        return

    print(
        f"{args.data} unit vectors; spaces keep {args.space_dims} dims, fitted on "
        f"min(n, {args.fit_sample}) items; RSS growth over a warmed-up empty process\n"
    )
    print(
        f"{'kind':<8} {'index':<18} {'dim':>5} {'items':>8} {'fit s':>6} {'build s':>8} "
        f"{'RSS MiB':>8} {'B/item':>7} {'x matrix':>8} {'peak B/item':>11} "
        f"{'fit peak MiB':>12} {'reported B/item':>15}"
    )
    results: list[Measured] = []
    for dim in args.dims:
        for n in args.n:
            baseline: float | None = None
            for kind in args.kinds:
                r = measure(kind, dim, n, args.data, args.space_dims, args.fit_sample)
                results.append(r)
                per_item = r.rss_bytes / n
                if kind == "matrix":
                    baseline = per_item
                ratio = f"{per_item / baseline:8.3f}" if baseline else f"{'-':>8}"
                print(
                    f"{kind:<8} {r.note:<18} {dim:>5} {n:>8} {r.fit_s:6.1f} {r.build_s:8.1f} "
                    f"{r.rss_bytes / 2**20:8.0f} {per_item:7.0f} {ratio} "
                    f"{r.peak_bytes / n:11.0f} {r.fit_peak_bytes / 2**20:12.0f} "
                    f"{r.reported_bytes / n:15.0f}",
                    flush=True,
                )
    slopes: list[dict[str, object]] = []
    if len(args.n) > 1:
        lo, hi = min(args.n), max(args.n)
        print(f"\nslope between {lo} and {hi} items (fixed costs cancel):")
        for dim in args.dims:
            matrix_slope: float | None = None
            for kind in args.kinds:
                a, b = (
                    next(r for r in results if (r.kind, r.dim, r.n) == (kind, dim, size))
                    for size in (lo, hi)
                )
                slope = (b.rss_bytes - a.rss_bytes) / (hi - lo)
                fixed = a.rss_bytes - slope * lo
                if kind == "matrix":
                    matrix_slope = slope
                ratio = f" = {slope / matrix_slope:.3f} x matrix" if matrix_slope else ""
                at_1m = (fixed + slope * 1e6) / 2**30
                print(
                    f"{kind:<8} dim {dim:>5}: {slope:7.0f} B/item{ratio}, fixed "
                    f"{fixed / 2**20:6.0f} MiB; at 1M items {at_1m:.2f} GiB "
                    f"(vectors alone {dim * 4 * 1e6 / 2**30:.2f} GiB)"
                )
                slopes.append({"kind": kind, "dim": dim, "slope": slope, "fixed": fixed})
                if kind == "ivf":
                    per_1m = (fixed + slope * 1e6) / 1e6
                    if hi >= 1_000_000:
                        per_1m, how = b.rss_bytes / hi, f"measured at {hi} items"
                    else:
                        how = f"extrapolated: fixed + slope x 1M, slope {slope:.0f} B/item"
                    verdict = "meets" if per_1m <= TARGET_BYTES_PER_ITEM else "MISSES"
                    print(
                        f"{'':<8} target: worker index at 1M items: <= {TARGET_BYTES_PER_ITEM} "
                        f"B/item -> {per_1m:.0f} B/item ({how}), {verdict} it"
                    )
    print(
        "\n(rows grow by 1.5x and the IVF's lists by doubling, so the slope between two sizes "
        "moves with where each sits in its growth cycle; the 1M figure is the one to hold.)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {key: str(value) for key, value in vars(args).items()},
            "results": [asdict(r) for r in results],
            "slopes": slopes,
        }
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"raw results: {args.json}")


if __name__ == "__main__":
    main()
