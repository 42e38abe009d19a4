"""Synthetic catalogues for the benchmarks, without Kafka or Redis imports.

``bench/pipeline.py``, ``bench/index.py`` and ``bench/index_memory.py`` (run as scripts, so
this folder is on their path) take their vectors from here: the same generator everywhere.
"""

from __future__ import annotations

import numpy as np


def catalogue_vectors(rng: np.random.Generator, m: int, dim: int, kind: str) -> np.ndarray:
    """``m`` unit vectors: isotropic random, or clustered like image embeddings.

    ``clustered`` is a 64-d latent mixture of 1,000 clusters embedded in ``dim`` with noise.
    """
    if kind == "random":
        vecs = rng.normal(size=(m, dim)).astype(np.float32)
    else:
        # The generator's own seed, so that chunks share centres and basis.
        state = np.random.default_rng(12345)
        centres = state.standard_normal((1000, 64), dtype=np.float32)
        basis = np.linalg.qr(state.standard_normal((dim, 64)))[0].astype(np.float32)
        latent = centres[rng.integers(0, 1000, m)] + 0.3 * rng.standard_normal((m, 64))
        vecs = latent.astype(np.float32) @ basis.T
        vecs += 0.02 * rng.standard_normal((m, dim), dtype=np.float32)
    unit: np.ndarray = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return unit
