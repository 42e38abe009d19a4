"""The retrieval space of a model: a projection fitted on the catalogue, 8-bit codes, an IVF.

Encoder outputs are 1280-d float32 (5 KiB per item): at 1M items that is 5.3 GB in every
interest worker. A ``Space`` maps them to ``dim`` <= 256 dimensions with an uncentred PCA
(the top right-singular vectors of a catalogue sample: the directions that keep most of the
items' energy, so inner products survive) and stores each projected vector as one byte per
dimension (scalar quantisation over the range seen in the sample). Inner products are taken in
the projected space: a user vector built from projected item vectors is the projection of the
full-dimension user vector (the interest rule is linear), so ranking needs nothing else.

Large catalogues are searched with an inverted file (faiss IVF: a coarse k-means, 4-bit codes
in the lists) whose candidates are re-scored with the 8-bit codes; its quantisers and the
number of lists probed (calibrated on the sample to reach a target recall) are part of the
space, so every worker searches identically.

``raw_space`` is the identity: full-dimension float32, exact search. It serves a model until
its catalogue is large enough to fit a space on.

A space is identified by ``<model_id>@<version>``; the version is a hash of its contents.
``models.index.fit`` fits one.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from models.exceptions import IndexInputError, SpaceError

Floats = npt.NDArray[np.float32]
Codes = npt.NDArray[np.uint8]

RAW_VERSION = "raw"
_MAGIC = b"VSPACE1\n"
_HEADER = struct.Struct("<I")


@dataclass(frozen=True, eq=False)
class SearchStructure:
    """A trained, empty IVF (faiss, inner product) and how it is searched.

    The IVF holds 4-bit codes of each item's first ``dims`` coordinates (the space's
    coordinates come by decreasing energy, so the leading ones rank candidates nearly as well
    as all of them, at half the bytes and half the scan); the candidates are re-scored with
    the full 8-bit rows.
    """

    trained: bytes
    """``faiss.serialize_index`` of the trained, empty index."""
    nprobe: int
    fetch: int
    """Candidates taken from the IVF per result wanted, before re-scoring with 8-bit codes."""
    dims: int
    """Leading coordinates of the space the IVF holds."""

    def new_index(self) -> Any:
        """A fresh, empty copy of the trained index, ready for ``add_with_ids``.

        No id -> list map (16-40 bytes per item): a removal scans the lists instead, and
        removals are rare (an item re-embedded or withdrawn), batched per call.
        """
        index: Any = faiss.deserialize_index(np.frombuffer(self.trained, dtype=np.uint8))
        index.nprobe = self.nprobe
        return index


@dataclass(frozen=True, eq=False)
class Space:
    """How one model's item vectors are held and searched; see the module docstring."""

    model_id: str
    version: str
    dim_in: int
    projection: Floats | None = None
    """(dim, dim_in) orthonormal rows; None = identity (raw space)."""
    lo: Floats | None = None
    """Per-dimension lower end of the 8-bit code range; None = float32 rows."""
    step: Floats | None = None
    """Per-dimension width of one code step."""
    fitted_on: int = 0
    """Catalogue size when the space was fitted (a refit is due when it has grown enough)."""
    ivf: SearchStructure | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """What the fit measured (energy kept, calibration recall), for operators."""

    @property
    def dim(self) -> int:
        """Dimension of the vectors searched."""
        return self.dim_in if self.projection is None else int(self.projection.shape[0])

    @property
    def id(self) -> str:
        """``<model_id>@<version>``."""
        return f"{self.model_id}@{self.version}"

    @property
    def is_raw(self) -> bool:
        """Whether this is the identity space (float32, full dimension, exact search)."""
        return self.version == RAW_VERSION

    def project(self, vectors: npt.ArrayLike) -> Floats:
        """Full-dimension vectors (n, dim_in) into this space (n, dim), float32."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise SpaceError(f"expected vectors of dim {self.dim_in}, got shape {x.shape}")
        if self.projection is None:
            return x
        return np.ascontiguousarray(x @ self.projection.T, dtype=np.float32)

    def encode(self, projected: Floats) -> Codes:
        """8-bit codes of projected vectors (values outside the range are clipped)."""
        if self.lo is None or self.step is None:
            raise SpaceError("a raw space has no codes")
        steps = np.floor((projected - self.lo) / self.step)
        codes: Codes = np.clip(steps, 0, 255).astype(np.uint8)
        return codes

    def decode(self, codes: Codes) -> Floats:
        """Projected vectors back from 8-bit codes (the centre of each code's step)."""
        if self.lo is None or self.step is None:
            raise SpaceError("a raw space has no codes")
        out = codes.astype(np.float32)
        out += np.float32(0.5)
        out *= self.step
        out += self.lo
        return out

    def to_bytes(self) -> bytes:
        """The space as one blob (for Redis): a JSON header, then raw little-endian arrays."""
        arrays: list[tuple[str, bytes]] = []
        if self.projection is not None:
            arrays.append(("projection", _f32(self.projection)))
        if self.lo is not None and self.step is not None:
            arrays += [("lo", _f32(self.lo)), ("step", _f32(self.step))]
        if self.ivf is not None:
            arrays.append(("ivf", self.ivf.trained))
        header = {
            "model_id": self.model_id,
            "version": self.version,
            "dim_in": self.dim_in,
            "dim": self.dim,
            "fitted_on": self.fitted_on,
            "nprobe": self.ivf.nprobe if self.ivf else None,
            "fetch": self.ivf.fetch if self.ivf else None,
            "ivf_dims": self.ivf.dims if self.ivf else None,
            "meta": self.meta,
            "arrays": [[name, len(data)] for name, data in arrays],
        }
        head = json.dumps(header, sort_keys=True).encode("utf-8")
        return b"".join([_MAGIC, _HEADER.pack(len(head)), head, *(data for _, data in arrays)])

    @classmethod
    def from_bytes(cls, blob: bytes) -> Space:
        """Read a blob written by ``to_bytes``; SpaceError if it is malformed."""
        try:
            if not blob.startswith(_MAGIC):
                raise SpaceError("not a space blob")
            pos = len(_MAGIC)
            (head_len,) = _HEADER.unpack_from(blob, pos)
            pos += _HEADER.size
            header = json.loads(blob[pos : pos + head_len])
            pos += head_len
            parts: dict[str, bytes] = {}
            for name, size in header["arrays"]:
                parts[str(name)] = blob[pos : pos + int(size)]
                pos += int(size)
            if pos != len(blob):
                raise SpaceError("space blob has trailing or missing bytes")
            dim_in, dim = int(header["dim_in"]), int(header["dim"])
            projection = lo = step = None
            if "projection" in parts:
                projection = _array(parts["projection"], (dim, dim_in))
            if "lo" in parts:
                lo, step = _array(parts["lo"], (dim,)), _array(parts["step"], (dim,))
            ivf = None
            if "ivf" in parts:
                ivf = SearchStructure(
                    parts["ivf"],
                    int(header["nprobe"]),
                    int(header["fetch"]),
                    int(header["ivf_dims"]),
                )
            return cls(
                model_id=str(header["model_id"]),
                version=str(header["version"]),
                dim_in=dim_in,
                projection=projection,
                lo=lo,
                step=step,
                fitted_on=int(header["fitted_on"]),
                ivf=ivf,
                meta=dict(header.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError, struct.error) as exc:
            if isinstance(exc, SpaceError):
                raise
            raise SpaceError(f"malformed space blob: {exc}") from exc


def _f32(arr: npt.NDArray[Any]) -> bytes:
    return np.ascontiguousarray(arr, dtype="<f4").tobytes()


def _array(data: bytes, shape: tuple[int, ...]) -> Floats:
    arr = np.frombuffer(data, dtype="<f4")
    if arr.size != int(np.prod(shape)):
        raise SpaceError(f"array of {arr.size} floats where {shape} was expected")
    if not np.isfinite(arr).all():
        raise SpaceError("space arrays must be finite")
    return arr.reshape(shape).astype(np.float32)


def raw_space(model_id: str, dim: int) -> Space:
    """The identity space: full-dimension float32 rows, exact search."""
    if dim < 1:
        raise SpaceError("dim must be >= 1")
    return Space(model_id=model_id, version=RAW_VERSION, dim_in=dim)


def unit_rows(vectors: npt.ArrayLike, dim: int) -> Floats:
    """``vectors`` as contiguous float32 unit rows of ``dim``; IndexInputError if any cannot be."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise IndexInputError(f"expected vectors of dim {dim}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise IndexInputError("vectors must be finite")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(norms).all():
        raise IndexInputError("a vector has zero (or overflowing) norm")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)
