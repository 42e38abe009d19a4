"""Fitting a retrieval space on a catalogue sample: projection, codes, IVF, recall checks.

``fit_space`` makes the ``Space`` of ``models.index.space``: an uncentred PCA of the sample,
8-bit code ranges, the recall the space keeps against full-dimension search (refused below
``FitParams.min_recall``) and, for large catalogues, an IVF whose probe count is calibrated to
``FitParams.target_recall`` on user-like queries.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from models.exceptions import SpaceError, SpaceRefused
from models.index.space import Floats, SearchStructure, Space


@dataclass(frozen=True, slots=True)
class FitParams:
    """How a space is fitted (from ``InterestSettings``)."""

    dims: int = 256
    """Dimensions kept (at most the input's)."""
    ivf_min_items: int = 50_000
    """Catalogue size from which the space carries an IVF (exact search below)."""
    target_recall: float = 0.98
    """Recall@k against exact search in the space that the probe count is calibrated to."""
    ivf_dims: int = 128
    """Leading coordinates the IVF holds (all of them if the space has fewer)."""
    min_recall: float = 0.0
    """Recall@k of the space's search against exact full-dimension search below which the
    fit is refused (``SpaceRefused``); 0 accepts any space."""
    k: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dims < 1 or self.k < 1 or self.ivf_dims < 1:
            raise SpaceError("dims, ivf_dims and k must be >= 1")
        if not 0.0 < self.target_recall <= 1.0:
            raise SpaceError("target_recall must be in (0, 1]")
        if not 0.0 <= self.min_recall <= 1.0:
            raise SpaceError("min_recall must be in [0, 1]")


def fit_space(
    model_id: str, sample: npt.ArrayLike, catalogue_size: int, params: FitParams
) -> Space:
    """Fit a space on a sample of the model's unit item vectors (rows of ``sample``)."""
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise SpaceError("the sample must be a finite (n >= 2, dim) array")
    dim_in = x.shape[1]
    dims = min(params.dims, dim_in)
    # Uncentred PCA: eigenvectors of X^T X (dim_in^2, cheap) rather than an SVD of the sample.
    gram = np.zeros((dim_in, dim_in), dtype=np.float64)
    for start in range(0, len(x), 4096):  # float64 in blocks: no double-size copy of the sample
        block = x[start : start + 4096].astype(np.float64)
        gram += block.T @ block
    gram /= len(x)
    eigval, eigvec = np.linalg.eigh(gram)
    order = np.argsort(eigval)[::-1][:dims]
    projection = np.ascontiguousarray(eigvec[:, order].T, dtype=np.float32)
    energy = float(eigval[order].sum() / max(eigval.sum(), 1e-30))
    y = x @ projection.T
    # The code range covers the sample with a margin: items fitted later fall inside it.
    lo_s, hi_s = y.min(axis=0), y.max(axis=0)
    margin = 0.05 * (hi_s - lo_s) + 1e-6
    lo = (lo_s - margin).astype(np.float32)
    step = ((hi_s + margin - lo) / 256.0).astype(np.float32)
    meta: dict[str, Any] = {"energy_kept": round(energy, 6), "sample": len(x)}
    base = Space(model_id, "", dim_in, projection, lo, step, catalogue_size, None, meta)
    decoded = base.decode(base.encode(y))
    space_recall = projection_recall(x, decoded, projection, catalogue_size, params)
    meta["space_recall"] = round(space_recall, 4)
    if space_recall < params.min_recall:
        raise SpaceRefused(model_id, space_recall, params.min_recall)
    ivf = None
    if catalogue_size >= params.ivf_min_items:
        ivf, recall = _fit_ivf(decoded, catalogue_size, params)
        meta["calibrated_recall"] = round(recall, 4)
    digest = hashlib.sha256()
    for arr in (projection, lo, step):
        digest.update(arr.tobytes())
    if ivf is not None:
        digest.update(ivf.trained)
        digest.update(struct.pack("<III", ivf.nprobe, ivf.fetch, ivf.dims))
    version = digest.hexdigest()[:12]
    return Space(model_id, version, dim_in, projection, lo, step, catalogue_size, ivf, meta)


def _depth(n_sample: int, catalogue_size: int, k: int) -> int:
    """The depth in a sample that matches the top ``k`` of the catalogue (``calibrate_nprobe``)."""
    scale = n_sample / max(catalogue_size, n_sample)
    return max(1, min(n_sample, round(k * scale)))


def projection_recall(
    x: Floats,
    decoded: Floats,
    projection: Floats,
    catalogue_size: int,
    params: FitParams,
    queries: int = 200,
) -> float:
    """Recall@k of exact search in the space against exact search at full dimension.

    Exact search over the space's decoded 8-bit rows, for user-like queries built from the
    sample ``x``: what the projection and the codes lose, before any IVF. On embedding-like
    catalogues it is close to 1 (``bench/index.py``); on vectors without structure (isotropic
    noise) the leading directions keep a fraction of the energy and it collapses.
    """
    rng = np.random.default_rng(params.seed + 1)
    k = _depth(len(x), catalogue_size, params.k)
    q = user_like_queries(x, queries, rng)
    truth = np.argpartition(-(q @ x.T), k - 1, axis=1)[:, :k]
    found = np.argpartition(-((q @ projection.T) @ decoded.T), k - 1, axis=1)[:, :k]
    hits = [len(np.intersect1d(a, b)) for a, b in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k)


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` items: ~4 sqrt(n), 16..4096."""
    return int(min(4096, max(16, round(4 * np.sqrt(max(n, 1))))))


NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def _fit_ivf(y: Floats, catalogue_size: int, params: FitParams) -> tuple[SearchStructure, float]:
    """An IVF with 4-bit codes over ``y`` (projected sample), its probe count calibrated.

    4-bit codes make the lists half the size of the 8-bit rows they are re-scored with, and
    rank candidates well enough that twice ``k`` of them hold the 8-bit top ``k``
    (``bench/index.py``: product quantisation needed 4x and reached lower recall).
    """
    dims = min(params.ivf_dims, y.shape[1])
    nlist = min(ivf_lists(catalogue_size), max(1, len(y) // 39))  # ~39 training points a list
    quantizer = faiss.IndexFlatIP(dims)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dims, nlist, faiss.ScalarQuantizer.QT_4bit, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.seed = params.seed
    index.cp.niter = 12  # coarse k-means: a dozen rounds settle the lists; 25 doubles the fit
    rng = np.random.default_rng(params.seed)
    train = y[rng.permutation(len(y))[: 64 * nlist]]
    index.train(np.ascontiguousarray(train[:, :dims]))
    trained = faiss.serialize_index(index).tobytes()
    structure = SearchStructure(trained, 1, 2, dims)
    nprobe, recall = calibrate_nprobe(structure, y, params, rng, catalogue_size)
    return SearchStructure(trained, nprobe, 2, dims), recall


def user_like_queries(items: Floats, n: int, rng: np.random.Generator) -> Floats:
    """Queries shaped like user vectors: a recent item plus a decayed sum of 1-32 others."""
    picks = rng.integers(0, len(items), size=(n, 33))
    sizes = rng.integers(1, 33, size=n)
    weights = rng.exponential(size=(n, 33)) * (np.arange(33)[None, :] < sizes[:, None])
    weights[:, 0] = 0.0
    q = items[picks[:, 0]] + 0.3 * np.einsum("nk,nkd->nd", weights, items[picks])
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(q / np.maximum(norms, 1e-12), dtype=np.float32)


def calibrate_nprobe(
    structure: SearchStructure,
    items: Floats,
    params: FitParams,
    rng: np.random.Generator,
    catalogue_size: int,
    queries: int = 200,
) -> tuple[int, float]:
    """The fewest lists to probe for ``target_recall`` at ``k`` on ``items``, and that recall.

    Recall is measured against exact search over the same (decoded 8-bit) vectors, with the
    candidates re-scored exactly as ``ItemIndex`` does. ``items`` may be a sample of a larger
    catalogue: the nearest ``k * len(items) / catalogue`` of a sample lie as far out as the
    nearest ``k`` of the whole, so that is the depth calibrated.
    """
    k = _depth(len(items), catalogue_size, params.k)
    index = structure.new_index()
    lead = structure.dims
    index.add_with_ids(np.ascontiguousarray(items[:, :lead]), np.arange(len(items), dtype=np.int64))
    q = user_like_queries(items, queries, rng)
    truth = np.argpartition(-(q @ items.T), k - 1, axis=1)[:, :k]
    recall = 0.0
    nprobe = 1
    # A catalogue without cluster structure (isotropic vectors) would need every list: stop
    # at 1/32 of them (at least 16) and take the recall there rather than turn the IVF into
    # a scan (on random vectors the projection, not the probing, bounds recall anyway).
    widest = max(min(int(index.nlist), 16), int(index.nlist) // 32)
    for nprobe in [p for p in NPROBE_LADDER if p < widest] + [widest]:
        index.nprobe = nprobe
        _, cand = index.search(
            np.ascontiguousarray(q[:, :lead]),
            min(len(items), max(structure.fetch * k, 2 * k + 8)),
        )
        found = _rescore_top(q, cand, items, k)
        recall = float(
            np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth, strict=True)])
        )
        if recall >= params.target_recall:
            break
    return nprobe, recall


def _rescore_top(
    q: Floats, cand: npt.NDArray[np.int64], items: Floats, k: int
) -> npt.NDArray[np.int64]:
    valid = cand >= 0
    safe = np.where(valid, cand, 0)
    scores = np.einsum("qd,qcd->qc", q, items[safe])
    scores[~valid] = -np.inf
    top = np.argpartition(-scores, min(k, scores.shape[1]) - 1, axis=1)[:, :k]
    return np.take_along_axis(safe, top, axis=1)
