"""The worker's item index: compact space (PCA + 8-bit codes, IVF) vs exact full-dimension search.

On the same items and the same user-like queries, three configurations of ``models.index``:

  exact-full    ``ItemIndex(raw_space)``: float32 rows of the encoder's dim, exact search --
                the baseline every other figure is divided by;
  compact       ``fit_space`` (uncentred PCA to ``--dims``, 8-bit codes) searched exactly;
  compact-ivf   the same with an IVF (4-bit lists, candidates re-scored with the 8-bit codes),
                as the worker holds a catalogue of ``--ivf-min-items`` (50,000) or more.

For each: fit time (PCA, IVF training and probe calibration), build time (upserts), build time
per million items (extrapolated linearly from this size: (fit + build) / n), query time per
query in batches of ``--batch`` (the worker searches a batch of users at once) and one query at
a time (p50/p99), recall@k against exact full-dimension float32 search (ground truth by brute
force), and bytes per item (``memory_bytes()``; ``bench/index_memory.py`` measures RSS).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/index.py --data clustered   # 100k x 1280
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/index.py --data photos      # 4000 real
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/index.py --data random --n 20000 --ivf force
    .venv/bin/python bench/index.py --data photos --n 600 --json /tmp/index.json

Data: ``random`` isotropic unit vectors (no direction carries more energy than another, so a
projection to 256 of 1280 dimensions must lose most neighbours: no target there); ``clustered``
the generator of ``bench/pipeline.py`` (a 64-d latent mixture of 1,000 clusters in 1280-d plus
noise); ``photos`` EfficientNet-Lite0 embeddings of the bundled photos augmented to ``--n``
distinct JPEGs (``models.vision.samples.derived_catalogue``), computed with the worker's own encoder
path and cached under ``--cache``. The space is fitted on ``min(n, --fit-sample)`` items drawn
at random, as the worker does; for photos on a random half, so that half the catalogue is out
of sample like items arriving after a fit (recall is printed for both halves).

Each query excludes ``--exclude`` items (a user's seen items): half of them its best true hits,
so that the search must reach past them, half at random; 5% of the catalogue is unavailable.
Both are left out of the ground truth too. Queries are timed already projected into the space
(the worker builds user vectors from projected item vectors), with one BLAS and one faiss
thread (on a shared 2-core box OpenBLAS's spinning threads make small products erratic); all
indexes are built first, then timed in interleaved rounds so load from other processes falls
on each alike. Targets: recall@100 >= 0.95 on clustered vectors and on photos.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no stubs
from vectors import catalogue_vectors

from models.index import FitParams, ItemIndex, Space, fit_space, raw_space, user_like_queries

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]

CHUNK = 4096  # items per upsert, like the worker's scan of Redis
RECALL_TARGET = 0.95
MODEL = "efficientnet-lite0"


# --- data ---------------------------------------------------------------------------------


def synthetic(n: int, dim: int, kind: str, seed: int) -> Floats:
    """``n`` unit vectors of ``kind``, generated in chunks (bounded temporaries)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        out[start : start + m] = catalogue_vectors(rng, m, dim, kind)
    return out


def photo_embeddings(n: int, seed: int, model_cache: Path, cache: Path) -> Floats:
    """Embeddings of ``n`` augmented bundled photos, through the worker's own encoder path.

    Cached in ``cache`` under the exported model's folder name (its weights' hash), so reruns
    load them; images that fail to decode are left out (and counted).
    """
    from models.exceptions import ImageError
    from models.vision.embedder import Embedder
    from models.vision.encoder import Encoder
    from models.vision.export import ensure_encoder
    from models.vision.images import ImageLimits
    from models.vision.samples import derived_catalogue

    folder = ensure_encoder(MODEL, model_cache)
    path = cache / f"photo_embeddings_{folder.name}_{n}_seed{seed}.npy"
    if path.exists():
        vectors: Floats = np.load(path)
        print(f"photo embeddings: {path} ({len(vectors)} vectors)", flush=True)
        return vectors
    t0 = time.perf_counter()
    catalogue = derived_catalogue(n, seed=seed)
    print(f"photos: {n} augmented JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)
    encoder = Encoder.load(folder, "cpu", 2)
    rows: list[Floats] = []
    failed = 0
    t0 = time.perf_counter()
    with Embedder(encoder, ImageLimits(20_000_000, 40_000_000, 16), 2) as embedder:
        for start in range(0, n, 256):
            batch = [data for _, data in catalogue[start : start + 256]]
            for result in embedder.embed_images(batch):
                if isinstance(result, ImageError):
                    failed += 1
                else:
                    rows.append(np.asarray(result, dtype=np.float32))
            done = min(start + 256, n)
            rate = done / (time.perf_counter() - t0)
            print(f"  embedded {done}/{n} ({rate:.0f} images/s)", flush=True)
    vectors = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
    if failed:
        print(f"  {failed} images failed to decode and are left out", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    print(f"  cached in {path}", flush=True)
    return vectors


# --- ground truth and exclusions ------------------------------------------------------------


def ground_truth(
    x: Floats,
    queries: Floats,
    available: npt.NDArray[np.bool_],
    k: int,
    exclude: int,
    rng: np.random.Generator,
) -> tuple[Ints, Ints]:
    """Exclusions (q, exclude) and the exact full-dimension top ``k`` (q, k) without them.

    Half of each query's exclusions are its best available hits, half random items.
    """
    best = exclude // 2
    depth = min(int(available.sum()), k + exclude)
    excluded = np.empty((len(queries), exclude), dtype=np.int64)
    truth = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 128):
        scores = queries[start : start + 128] @ x.T
        scores[:, ~available] = -np.inf
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        ranked = np.take_along_axis(top, order, axis=1)
        for j, row in enumerate(ranked):
            u = start + j
            others = rng.choice(len(x), exclude - best, replace=False)
            mine = np.concatenate([row[:best], others])
            excluded[u] = mine
            truth[u] = row[~np.isin(row, mine)][:k]
    return excluded, truth


def recall(found: Ints, truth: Ints, among: npt.NDArray[np.bool_] | None = None) -> float:
    """Mean share of each query's true top found (only truth items in ``among`` if given)."""
    shares = []
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        if among is not None:
            t = t[among[t]]
        if len(t):
            shares.append(len(np.intersect1d(f, t)) / len(t))
    return float(np.mean(shares)) if shares else float("nan")


# --- configurations --------------------------------------------------------------------------


@dataclass
class Config:
    name: str
    index: ItemIndex
    fit_s: float
    build_s: float = 0.0
    batch_ms: list[float] = field(default_factory=list)
    """Per-query time of each timed batch."""
    single_ms: list[float] = field(default_factory=list)
    found: Ints | None = None
    """Result positions (catalogue order) of every query, from the batched searches."""
    row_of_pos: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pos_of_row: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def space(self) -> Space:
        return self.index.space


def build(
    name: str, space: Space, fit_s: float, ids: list[str], x: Floats, flags: list[bool]
) -> Config:
    index = ItemIndex(space)
    t0 = time.perf_counter()
    for start in range(0, len(x), CHUNK):
        stop = start + CHUNK
        index.upsert_many(ids[start:stop], x[start:stop], flags[start:stop])
    config = Config(name, index, fit_s, time.perf_counter() - t0)
    # Rows are slots; map them to catalogue positions and back through the ids.
    config.row_of_pos = index.rows(ids)
    config.pos_of_row = np.full(index.row_bound, -1, dtype=np.int64)
    config.pos_of_row[config.row_of_pos] = np.arange(len(ids))
    print(
        f"  {name}: {index.kind}, dim {space.dim}, fit {fit_s:.1f} s, "
        f"build {config.build_s:.1f} s {describe(space)}",
        flush=True,
    )
    return config


def describe(space: Space) -> str:
    meta = dict(space.meta)
    if space.ivf is not None:
        ivf: Any = space.ivf.new_index()
        meta.update(nlist=int(ivf.nlist), nprobe=space.ivf.nprobe, fetch=space.ivf.fetch)
    return str(meta) if meta else ""


def time_round(
    config: Config,
    queries: Floats,
    excluded: Ints,
    k: int,
    batch: int,
    singles: int,
) -> None:
    """One timing round: every query in batches, then the first ``singles`` one at a time."""
    index = config.index
    q = config.space.project(queries)  # outside the timing: the worker's queries are in-space
    ex_rows = config.row_of_pos[excluded]
    per = excluded.shape[1]
    found = np.full((len(q), k), -1, dtype=np.int64)
    for start in range(0, len(q), batch):
        stop = min(start + batch, len(q))
        ptr = np.arange(stop - start + 1, dtype=np.int64) * per
        rows_in = np.ascontiguousarray(ex_rows[start:stop].ravel())
        t0 = time.perf_counter()
        rows, _ = index.search(q[start:stop], k, exclude_ptr=ptr, exclude_rows=rows_in)
        config.batch_ms.append((time.perf_counter() - t0) * 1e3 / (stop - start))
        found[start:stop] = np.where(rows >= 0, config.pos_of_row[np.maximum(rows, 0)], -1)
    config.found = found
    one = np.array([0, per], dtype=np.int64)
    for u in range(min(singles, len(q))):
        t0 = time.perf_counter()
        index.search(q[u : u + 1], k, exclude_ptr=one, exclude_rows=ex_rows[u])
        config.single_ms.append((time.perf_counter() - t0) * 1e3)


# --- main ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", choices=("random", "clustered", "photos"), default="clustered")
    parser.add_argument(
        "--n", type=int, default=None, help="items (default 100,000; 4,000 for photos)"
    )
    parser.add_argument("--dim", type=int, default=1280, help="random/clustered only")
    parser.add_argument("--dims", type=int, default=256, help="dimensions kept by the space")
    parser.add_argument(
        "--ivf",
        choices=("auto", "force", "skip"),
        default=None,
        help="compact-ivf: as the worker (IVF from --ivf-min-items; skipped below), forced "
        "(ivf_min_items=0), or not run; default auto, force for photos",
    )
    parser.add_argument("--ivf-min-items", type=int, default=FitParams().ivf_min_items)
    parser.add_argument("--target-recall", type=float, default=FitParams().target_recall)
    parser.add_argument("--fit-sample", type=int, default=50_000, help="as the worker's")
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64, help="queries per search call")
    parser.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--exclude", type=int, default=50, help="excluded items per query")
    parser.add_argument("--unavailable", type=float, default=0.05, help="share of the items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-cache", type=Path, default=Path(".state/models"))
    parser.add_argument("--cache", type=Path, default=Path(".state/bench"), help="embeddings")
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    args = parser.parse_args()
    n = args.n or (4000 if args.data == "photos" else 100_000)
    ivf_mode = args.ivf or ("force" if args.data == "photos" else "auto")

    # One BLAS and one faiss thread throughout: the worker's setting (streams/cli), and the
    # only one that times reproducibly on a shared 2-core box.
    threadpool_limits(limits=1, user_api="blas")
    faiss.omp_set_num_threads(1)

    t0 = time.perf_counter()
    if args.data == "photos":
        x = photo_embeddings(n, args.seed, args.model_cache, args.cache)
        n = len(x)
    else:
        x = synthetic(n, args.dim, args.data, args.seed)
    dim = x.shape[1]
    rng = np.random.default_rng(args.seed + 1)
    available = np.ones(n, dtype=np.bool_)
    available[rng.choice(n, int(n * args.unavailable), replace=False)] = False
    if args.data == "photos":
        fit_rows = np.sort(rng.choice(n, n // 2, replace=False))
        fit_note = f"fitted on a random half ({len(fit_rows)} items; the rest out of sample)"
    else:
        fit_rows = np.sort(rng.choice(n, min(n, args.fit_sample), replace=False))
        fit_note = f"fitted on {len(fit_rows)} items drawn at random, as the worker"
    in_sample = np.zeros(n, dtype=np.bool_)
    in_sample[fit_rows] = True
    queries = user_like_queries(x, args.queries, rng)
    excluded, truth = ground_truth(x, queries, available, args.k, args.exclude, rng)
    print(
        f"{n} x {dim} {args.data} unit vectors ({time.perf_counter() - t0:.1f} s to make), "
        f"{args.queries} user-like queries in batches of {args.batch} x {args.rounds} rounds "
        f"(+{args.single} one at a time), k={args.k}, {args.exclude} exclusions per query, "
        f"{n - int(available.sum())} unavailable; space: {args.dims} dims, {fit_note}; "
        f"1 BLAS / faiss thread",
        flush=True,
    )

    ids = [f"item-{i:08d}" for i in range(n)]
    flags = available.tolist()
    configs = [build("exact-full", raw_space("bench", dim), 0.0, ids, x, flags)]

    def fitted(ivf_min_items: int) -> tuple[Space, float]:
        params = FitParams(
            dims=args.dims,
            ivf_min_items=ivf_min_items,
            target_recall=args.target_recall,
            k=args.k,
            seed=args.seed,
        )
        sample = np.ascontiguousarray(x[fit_rows])
        t = time.perf_counter()
        space = fit_space("bench", sample, n, params)
        return space, time.perf_counter() - t

    space, fit_s = fitted(2**62)
    configs.append(build("compact", space, fit_s, ids, x, flags))
    if ivf_mode == "skip" or (ivf_mode == "auto" and n < args.ivf_min_items):
        print(
            f"  compact-ivf: not run (the worker searches exactly below {args.ivf_min_items} "
            "items; --ivf force runs it)",
            flush=True,
        )
    else:
        space, fit_s = fitted(0 if ivf_mode == "force" else args.ivf_min_items)
        configs.append(build("compact-ivf", space, fit_s, ids, x, flags))

    for r in range(args.rounds):
        t0 = time.perf_counter()
        for c in configs:
            time_round(c, queries, excluded, args.k, args.batch, args.single)
        print(f"  timing round {r + 1}/{args.rounds}: {time.perf_counter() - t0:.1f} s", flush=True)

    base = configs[0]
    print(
        f"\n{'config':<12} {'kind':<5} {'dim':>4} {'fit s':>6} {'build s':>7} "
        f"{'build/1M':>8} {'total/1M*':>9} {'x':>5} {'batch p50':>9} {'x':>5} {'p99':>6} {'x':>5} "
        f"{'single p50':>10} {'x':>5} {'p99':>6} {'x':>5} {'recall@' + str(args.k):>10} "
        f"{'B/item':>7} {'x':>5}"
    )
    results: list[dict[str, Any]] = []
    base_per_m = (base.fit_s + base.build_s) / n * 1e6
    base_bytes = base.index.memory_bytes() / n
    for c in configs:
        assert c.found is not None
        per_m = (c.fit_s + c.build_s) / n * 1e6
        per_item = c.index.memory_bytes() / n
        rec = recall(c.found, truth)
        row = {
            "config": c.name,
            "kind": c.index.kind,
            "dim": c.space.dim,
            "fit_s": c.fit_s,
            "build_s": c.build_s,
            "build_s_per_million_extrapolated": c.build_s / n * 1e6,
            "fit_and_build_s_per_million_extrapolated": per_m,
            "batch_ms_per_query_p50": pct(c.batch_ms, 50),
            "batch_ms_per_query_p99": pct(c.batch_ms, 99),
            "single_ms_p50": pct(c.single_ms, 50),
            "single_ms_p99": pct(c.single_ms, 99),
            "recall": rec,
            "recall_in_sample": recall(c.found, truth, in_sample),
            "recall_out_of_sample": recall(c.found, truth, ~in_sample),
            "recall_vs_compact_exact": recall(c.found, configs[1].found)
            if configs[1].found is not None
            else None,
            "bytes_per_item": per_item,
            "space_meta": c.space.meta,
            "nprobe": c.space.ivf.nprobe if c.space.ivf else None,
            "batch_ms": c.batch_ms,
            "single_ms": c.single_ms,
        }
        results.append(row)
        print(
            f"{c.name:<12} {c.index.kind:<5} {c.space.dim:>4} {c.fit_s:6.1f} {c.build_s:7.1f} "
            f"{c.build_s / n * 1e6:8.1f} {per_m:9.1f} {per_m / base_per_m:5.1f} "
            f"{row['batch_ms_per_query_p50']:9.3f} "
            f"{row['batch_ms_per_query_p50'] / pct(base.batch_ms, 50):5.2f} "
            f"{row['batch_ms_per_query_p99']:6.3f} "
            f"{row['batch_ms_per_query_p99'] / pct(base.batch_ms, 99):5.2f} "
            f"{row['single_ms_p50']:10.3f} {row['single_ms_p50'] / pct(base.single_ms, 50):5.2f} "
            f"{row['single_ms_p99']:6.3f} {row['single_ms_p99'] / pct(base.single_ms, 99):5.2f} "
            f"{rec:10.4f} {per_item:7.0f} {per_item / base_bytes:5.2f}"
        )
    print(
        f"\n* seconds per million items, extrapolated linearly from {n} items: build/1M = upserts "
        "alone, total/1M = fit + upserts (the fit is a cost per catalogue, not per item: it grows "
        "with the sample, capped at 50k, and the IVF's lists with sqrt(n)). Query times are "
        f"ms per query: batch = one search call of {args.batch} queries / {args.batch}; single = "
        "one call per query. B/item: memory_bytes() / n (RSS: bench/index_memory.py)."
    )
    for row in results[1:]:
        parts = [f"{row['config']}: recall@{args.k} {row['recall']:.4f}"]
        if args.data == "photos":
            parts.append(
                f"in-sample items {row['recall_in_sample']:.4f}, "
                f"out-of-sample items {row['recall_out_of_sample']:.4f}"
            )
        if row["config"] == "compact-ivf":
            parts.append(f"vs compact exact {row['recall_vs_compact_exact']:.4f}")
        if args.data == "random":
            parts.append("no target on isotropic vectors")
        else:
            verdict = "meets" if row["recall"] >= RECALL_TARGET else "MISSES"
            parts.append(f"{verdict} the target >= {RECALL_TARGET}")
        print("; ".join(parts))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {key: str(value) for key, value in vars(args).items()},
            "data": args.data,
            "n": n,
            "dim": dim,
            "fit_sample": len(fit_rows),
            "unavailable": n - int(available.sum()),
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"raw results: {args.json}")


if __name__ == "__main__":
    main()
