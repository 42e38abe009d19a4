"""The item index every interest worker holds: a compact retrieval space and its search."""

from __future__ import annotations

from models.index.space import (
    RAW_VERSION,
    FitParams,
    SearchStructure,
    Space,
    SpaceError,
    fit_space,
    raw_space,
    user_like_queries,
)
from models.index.store import IndexError_, ItemIndex, Rows, unit_rows

__all__ = [
    "RAW_VERSION",
    "FitParams",
    "IndexError_",
    "ItemIndex",
    "Rows",
    "SearchStructure",
    "Space",
    "SpaceError",
    "fit_space",
    "raw_space",
    "unit_rows",
    "user_like_queries",
]
