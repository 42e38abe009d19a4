"""``DeadLetter``: a failed message with a machine-readable reason, on the dead-letter topic."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas.base import Record, TimestampMs


class ErrorCode(StrEnum):
    """Why a message was dead-lettered. Stable strings: dashboards and replays key on them."""

    EMPTY_PAYLOAD = "empty_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    SCHEMA_VIOLATION = "schema_violation"
    MISSING_KEY = "missing_key"
    KEY_MISMATCH = "key_mismatch"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_UNDECODABLE = "image_undecodable"
    IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"
    IMAGE_TOO_SMALL = "image_too_small"
    IMAGE_FETCH_FAILED = "image_fetch_failed"
    IMAGE_URI_FORBIDDEN = "image_uri_forbidden"
    DIM_MISMATCH = "dim_mismatch"
    PROCESSING_FAILED = "processing_failed"


class DeadLetter(Record):
    """The failed message as it arrived (base64), where it came from, and why it failed."""

    source_topic: str = Field(min_length=1, max_length=512)
    partition: int = Field(ge=-1)
    offset: int = Field(ge=-1)
    error_code: ErrorCode
    error: str = Field(max_length=2000, description="Human-readable detail, truncated.")
    key_b64: str | None = Field(default=None, description="Base64 of the original key, if any.")
    payload_b64: str = Field(description="Base64 of the original value bytes (may be truncated).")
    payload_truncated: bool = False
    ts_ms: TimestampMs
