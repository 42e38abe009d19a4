"""Exact vs HNSW (faiss, usearch) retrieval on unit vectors: build, query latency, recall, memory.

Every figure is printed next to its ratio against exact search measured in the same run:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/index.py            # 100k x 1280 random
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/index.py --data clustered --skip usearch
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/index.py --n 20000

(One BLAS thread: on a shared 2-core box OpenBLAS's spinning threads make a single query's
matrix-vector product up to 100x slower.) Each query excludes ``--exclude`` items, half of them
among its true top hits so that filtering must skip them, and 5% of the catalogue is
unavailable, as in the worker. For the raw libraries the beam (ef) is stepped up until recall@k
reaches ``--target``; ``visrec-hnsw`` is our ``AnnIndex`` (faiss) exactly as the worker runs it,
with its self-calibrated beam. All indexes are built first, then timed in interleaved rounds,
so that load from other processes falls on every backend alike.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from usearch.index import Index as UsearchIndex

from models.index import AnnIndex, ExactIndex, HnswParams, ItemIndex

Vectors = npt.NDArray[np.float32]
EF_LADDER = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)


@dataclass
class Backend:
    name: str
    build: Callable[[], object]
    search: Callable[[Vectors, set[int], int], list[int]]
    memory: Callable[[], int]
    set_ef: Callable[[int], None] | None = None
    note: str = ""
    build_s: float = 0.0
    times_ms: list[float] = field(default_factory=list)
    recall: float = 1.0


def make_data(n: int, dim: int, kind: str, seed: int) -> Vectors:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((n, dim), dtype=np.float32)
    else:  # 64-d latent mixture of 1000 clusters embedded in dim with noise: like embeddings
        centres = rng.standard_normal((1000, 64), dtype=np.float32)
        latent = centres[rng.integers(0, 1000, n)] + 0.3 * rng.standard_normal((n, 64))
        basis = np.linalg.qr(rng.standard_normal((dim, 64)))[0].astype(np.float32)
        x = latent.astype(np.float32) @ basis.T + 0.02 * rng.standard_normal((n, dim), np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def item_index_backend(name: str, index: ItemIndex, x: Vectors, unavailable: set[int]) -> Backend:
    ids = [str(i) for i in range(len(x))]
    flags = [i not in unavailable for i in range(len(x))]

    def search(q: Vectors, ex: set[int], k: int) -> list[int]:
        return [int(h[0]) for h in index.search(q, k, exclude={str(i) for i in ex})]

    return Backend(
        name,
        lambda: index.upsert_many(ids, x, model_id="bench", available=flags),
        search,
        index.memory_bytes,
    )


def faiss_backend(x: Vectors, unavailable: set[int], m: int, efc: int) -> Backend:
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    state = {"ef": 128}
    base = np.ones(len(x), dtype=bool)
    base[list(unavailable)] = False

    def search(q: Vectors, ex: set[int], k: int) -> list[int]:
        mask = base.copy()
        mask[list(ex)] = False
        bitmap = np.packbits(mask, bitorder="little")
        params: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        params.efSearch = max(state["ef"], k)
        _, labels = index.search(q.reshape(1, -1), k, params=params)
        return [int(i) for i in labels[0] if i >= 0]

    def set_ef(ef: int) -> None:
        state["ef"] = ef

    def memory() -> int:
        hnsw: Any = index.hnsw  # the stubs omit the link arrays
        links = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        return int(index.ntotal * x.shape[1] * 4 + links)

    return Backend("faiss", lambda: index.add(x), search, memory, set_ef)


def usearch_backend(x: Vectors, unavailable: set[int], m: int, efc: int) -> Backend:
    index = UsearchIndex(
        ndim=x.shape[1], metric="ip", dtype="f32", connectivity=m, expansion_add=efc
    )

    def build() -> object:
        index.add(np.arange(len(x), dtype=np.uint64), x, threads=faiss.omp_get_max_threads())
        # No filter in usearch's Python API: unavailable items leave the graph (the worker
        # would keep their vectors beside it), excluded ones are over-fetched past.
        return index.remove(np.fromiter(unavailable, dtype=np.uint64))

    def search(q: Vectors, ex: set[int], k: int) -> list[int]:
        fetch = k + len(ex)
        while True:
            keys = [int(key) for key in index.search(q, fetch).keys]
            hits = [key for key in keys if key not in ex][:k]
            if len(hits) == k or fetch >= len(index):
                return hits
            fetch *= 2

    def set_ef(ef: int) -> None:
        index.expansion_search = ef  # type: ignore[misc]  # usearch has the setter, mypy misses it

    return Backend("usearch", build, search, lambda: int(index.memory_usage), set_ef)


def run_queries(
    backend: Backend, queries: Vectors, excludes: Sequence[set[int]], k: int
) -> tuple[list[list[int]], list[float]]:
    found, times = [], []
    for q, ex in zip(queries, excludes, strict=True):
        t0 = time.perf_counter()
        found.append(backend.search(q, ex, k))
        times.append((time.perf_counter() - t0) * 1e3)
    return found, times


def recall_at(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]], k: int) -> float:
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def per_million_gib(bytes_per_item: float, measured_dim: int, half: bool) -> float:
    """Extrapolate to 1M items at dim 1280: vectors scale with dim and width, links do not."""
    vector = 1280 * (2 if half else 4)
    return (bytes_per_item - measured_dim * 4 + vector) * 1_000_000 / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--exclude", type=int, default=200)
    parser.add_argument("--data", choices=("random", "clustered"), default="random")
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--efc", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--skip", nargs="*", default=[], choices=("faiss", "usearch", "visrec"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed + 1)
    x = make_data(args.n, args.dim, args.data, args.seed)
    noise = make_data(args.queries, args.dim, "random", args.seed + 2)
    if args.data == "random":
        queries = noise
    else:  # near some item, as a user vector is
        queries = x[rng.integers(0, args.n, args.queries)] + 0.5 * noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    unavailable = set(rng.choice(args.n, args.n // 20, replace=False).tolist())
    order = np.argsort(-(queries @ x.T), axis=1)
    excludes = [
        set(row[: args.exclude // 2].tolist()) | set(rng.choice(args.n, args.exclude // 2).tolist())
        for row in order
    ]
    print(
        f"{args.n} x {args.dim} {args.data} unit vectors, {args.queries} queries x "
        f"{args.rounds} rounds, k={args.k}, {args.exclude} exclusions per query, "
        f"{len(unavailable)} unavailable, HNSW M={args.m} efConstruction={args.efc}, "
        f"threads={faiss.omp_get_max_threads()}",
        flush=True,
    )

    exact = item_index_backend("exact", ExactIndex(), x, unavailable)
    backends = [exact]
    ann: AnnIndex | None = None
    if "visrec" not in args.skip:
        ann = AnnIndex(params=HnswParams(m=args.m, ef_construction=args.efc), background=False)
        backends.append(item_index_backend("visrec-hnsw", ann, x, unavailable))
    if "faiss" not in args.skip:
        backends.append(faiss_backend(x, unavailable, args.m, args.efc))
    if "usearch" not in args.skip:
        backends.append(usearch_backend(x, unavailable, args.m, args.efc))

    for backend in backends:
        t0 = time.perf_counter()
        backend.build()
        backend.build_s = time.perf_counter() - t0
        print(f"  {backend.name}: built in {backend.build_s:.1f} s", flush=True)
    if ann is not None:
        backends[1].note = f"ef={ann.search_beam} self-calibrated (in build time)"

    truth, _ = run_queries(exact, queries, excludes, args.k)
    for backend in backends:
        if backend.set_ef is None:
            continue
        for ef in EF_LADDER:  # the smallest beam reaching the target on these queries
            backend.set_ef(ef)
            found, times = run_queries(backend, queries, excludes, args.k)
            rec = recall_at(found, truth, args.k)
            print(
                f"  {backend.name} ef={ef:>5} recall@{args.k}={rec:.4f} "
                f"p50={np.median(times):.1f} ms",
                flush=True,
            )
            backend.note = f"ef={ef} (smallest reaching {args.target} here)"
            if rec >= args.target:
                break

    for _ in range(args.rounds):
        for backend in backends:
            found, times = run_queries(backend, queries, excludes, args.k)
            backend.times_ms.extend(times)
            backend.recall = recall_at(found, truth, args.k)

    def p(backend: Backend, q: float) -> float:
        return float(np.percentile(backend.times_ms, q))

    ref_bytes = exact.memory() / args.n
    print(
        f"\n{'backend':<12} {'build s':>8} {'x':>6} {'p50 ms':>8} {'x':>5} {'p99 ms':>8} "
        f"{'x':>5} {'recall':>7} {'B/item':>7} {'x':>5} {'GiB/1M@1280 f32':>15} {'f16':>6}  note"
    )
    for b in backends:
        per_item = b.memory() / args.n
        print(
            f"{b.name:<12} {b.build_s:8.1f} {b.build_s / exact.build_s:6.1f} {p(b, 50):8.2f} "
            f"{p(b, 50) / p(exact, 50):5.2f} {p(b, 99):8.2f} {p(b, 99) / p(exact, 99):5.2f} "
            f"{b.recall:7.4f} {per_item:7.0f} {per_item / ref_bytes:5.2f} "
            f"{per_million_gib(per_item, args.dim, False):15.2f} "
            f"{per_million_gib(per_item, args.dim, True):6.2f}  {b.note}"
        )


if __name__ == "__main__":
    main()
