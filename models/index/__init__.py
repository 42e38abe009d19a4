"""The item index every interest worker holds: a compact retrieval space and its search."""

from __future__ import annotations

from models.exceptions import IndexInputError, SpaceError, SpaceRefused
from models.index.fit import FitParams, fit_space, user_like_queries
from models.index.space import RAW_VERSION, SearchStructure, Space, raw_space, unit_rows
from models.index.store import ItemIndex, Rows

__all__ = [
    "RAW_VERSION",
    "FitParams",
    "IndexInputError",
    "ItemIndex",
    "Rows",
    "SearchStructure",
    "Space",
    "SpaceError",
    "SpaceRefused",
    "fit_space",
    "raw_space",
    "unit_rows",
    "user_like_queries",
]
