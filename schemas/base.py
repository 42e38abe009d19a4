"""The base of every contract: strict frozen records, the schema version, size limits."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

SCHEMA_VERSION = 1
"""The one wire version every contract is written in today."""

# Year 9999 in epoch milliseconds: anything beyond is a producer bug, not a timestamp.
MAX_TS_MS = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits enforced at the edge; the defaults are the settings' defaults."""

    max_id_length: int = 256
    max_context_bytes: int = 4096
    max_event_bytes: int = 64 * 1024
    max_product_bytes: int = 16 * 1024 * 1024
    max_items_per_list: int = 1000


DEFAULT_LIMITS = Limits()


def limits_from(info: ValidationInfo) -> Limits:
    """Limits passed as validation context (``context={"limits": ...}``), else the defaults."""
    ctx = info.context
    if isinstance(ctx, dict):
        found = ctx.get("limits")
        if isinstance(found, Limits):
            return found
    return DEFAULT_LIMITS


def _check_identifier(value: str, info: ValidationInfo) -> str:
    limit = limits_from(info).max_id_length
    if len(value) > limit:
        raise ValueError(f"identifier longer than {limit} characters")
    # Control characters in ids break logs, Redis key scans and terminals downstream.
    # isprintable() is False for every Cc/Cs character (and a few harmless others): a fast
    # path for the common id, the exact test for the rest.
    if not value.isprintable() and any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValueError("identifier contains control or surrogate characters")
    return value


Identifier = Annotated[str, Field(min_length=1), AfterValidator(_check_identifier)]
"""A non-empty id: Unicode allowed, control characters not, length bounded by ``Limits``."""

TimestampMs = Annotated[int, Field(ge=0, le=MAX_TS_MS, description="UTC epoch milliseconds")]


class Record(BaseModel):
    """A wire record: strict types, no unknown fields, immutable, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    schema_version: int = Field(
        default=SCHEMA_VERSION,
        description="Wire version of this contract; consumers reject versions they do not know.",
    )

    def to_json_bytes(self) -> bytes:
        """Serialise to the compact UTF-8 JSON wire form."""
        return self.model_dump_json(exclude_none=False).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, raw: bytes | str, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Parse and validate the wire form (raises ``pydantic.ValidationError``)."""
        return cls.model_validate_json(raw, context={"limits": limits})

    @classmethod
    def from_obj(cls, obj: Any, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Validate an already-parsed JSON object, JSON semantics (strings for enums)."""
        return cls.model_validate_json(json.dumps(obj), context={"limits": limits})
