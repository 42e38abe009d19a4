"""``ItemVector``: an item's embedding, compacted by ``item_id`` on ``visrec.item-vectors.v1``."""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from schemas.base import Identifier, Record, TimestampMs


class VectorDType(StrEnum):
    """Element types a vector may travel as (always little-endian)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


_NP_DTYPES: dict[VectorDType, np.dtype[Any]] = {
    VectorDType.FLOAT32: np.dtype("<f4"),
    VectorDType.FLOAT16: np.dtype("<f2"),
}


class ItemVector(Record):
    """An embedding plus what the index needs to filter on without another lookup."""

    item_id: Identifier
    model_id: str = Field(min_length=1, max_length=128)
    dim: int = Field(ge=1, le=65536)
    dtype: VectorDType = VectorDType.FLOAT32
    vector: str = Field(description="Base64 of dim little-endian elements of dtype.")
    available: bool = True
    category: str = Field(default="", max_length=256)
    ts_ms: TimestampMs

    @model_validator(mode="after")
    def _vector_matches_dim(self) -> Self:
        try:
            raw = base64.b64decode(self.vector, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("vector is not valid base64") from exc
        if len(raw) != self.dim * _NP_DTYPES[self.dtype].itemsize:
            raise ValueError("vector length does not match dim and dtype")
        if not np.isfinite(np.frombuffer(raw, dtype=_NP_DTYPES[self.dtype])).all():
            raise ValueError("vector contains NaN or infinity")
        return self

    def to_array(self) -> npt.NDArray[np.float32]:
        """The vector as a float32 array of shape (dim,)."""
        raw = base64.b64decode(self.vector)
        return np.frombuffer(raw, dtype=_NP_DTYPES[self.dtype]).astype(np.float32)

    @classmethod
    def from_array(
        cls,
        item_id: str,
        model_id: str,
        vector: npt.NDArray[np.floating],
        ts_ms: int,
        *,
        dtype: VectorDType = VectorDType.FLOAT32,
        available: bool = True,
        category: str = "",
    ) -> Self:
        """Pack a 1-D array into the wire form."""
        arr = np.ascontiguousarray(vector, dtype=_NP_DTYPES[dtype]).reshape(-1)
        return cls(
            item_id=item_id,
            model_id=model_id,
            dim=int(arr.shape[0]),
            dtype=dtype,
            vector=base64.b64encode(arr.tobytes()).decode("ascii"),
            available=available,
            category=category,
            ts_ms=ts_ms,
        )
