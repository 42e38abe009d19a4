"""The best columns of every row of a score matrix, in a deterministic order."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.int64]


def top_columns(
    scores: npt.NDArray[np.float32], rows: Rows, k: int
) -> tuple[Rows, npt.NDArray[np.float32]]:
    """The ``k`` best columns of each row of ``scores`` (rows broadcast to its shape)."""
    width = scores.shape[1]
    k = min(k, width)
    if k < width:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(width), scores.shape)
    top_scores = np.take_along_axis(scores, part, axis=1)
    top_rows = np.take_along_axis(np.broadcast_to(rows, scores.shape), part, axis=1)
    # Best first; equal scores by row, so the order never depends on the partition.
    order = np.lexsort((top_rows, -top_scores), axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    top_rows = np.take_along_axis(top_rows, order, axis=1).copy()
    top_rows[~np.isfinite(top_scores)] = -1
    return top_rows, top_scores
