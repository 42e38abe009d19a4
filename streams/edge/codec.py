"""Edge decoding: raw Kafka bytes in, a typed record or a rejection with a reason code out.

Bad input is data, not an exception: ``decode`` returns either the record or a ``Rejected``,
and ``to_dead_letter`` turns a rejection into the ``DeadLetter`` published for it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from schemas import SCHEMA_VERSION, DeadLetter, ErrorCode, Limits, Record
from streams.kafka.topics import TopicSpec

R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message cannot be processed."""

    code: ErrorCode
    error: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _classify_failure(raw: bytes, exc: ValidationError) -> Rejected:
    """Name the first thing wrong with a payload pydantic refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected(ErrorCode.INVALID_ENCODING, f"payload is not UTF-8: {err}")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        return Rejected(ErrorCode.INVALID_JSON, f"payload is not JSON: {err}")
    if not isinstance(obj, dict):
        return Rejected(ErrorCode.NOT_AN_OBJECT, f"payload is a JSON {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        return Rejected(
            ErrorCode.UNSUPPORTED_VERSION,
            f"schema_version {version} is not supported (this build reads {SCHEMA_VERSION})",
        )
    return Rejected(ErrorCode.SCHEMA_VIOLATION, _summarise(exc))


def _summarise(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode(
    model: type[R],
    value: bytes | None,
    *,
    key: bytes | None,
    max_bytes: int,
    limits: Limits,
    key_field: str | None = None,
) -> R | Rejected:
    """Validate ``value`` as ``model``; with ``key_field``, the Kafka key must equal that field."""
    if not value:
        return Rejected(ErrorCode.EMPTY_PAYLOAD, "empty or null message value")
    if len(value) > max_bytes:
        return Rejected(
            ErrorCode.PAYLOAD_TOO_LARGE, f"payload is {len(value)} bytes, limit {max_bytes}"
        )
    try:
        record = model.from_json_bytes(value, limits)
    except ValidationError as exc:
        return _classify_failure(value, exc)
    if record.schema_version != SCHEMA_VERSION:
        return Rejected(
            ErrorCode.UNSUPPORTED_VERSION,
            f"schema_version {record.schema_version} is not supported",
        )
    if key_field is not None:
        expected = str(getattr(record, key_field))
        if key is None:
            # Keys decide the partition, i.e. which worker owns the entity: no key, no owner.
            return Rejected(ErrorCode.MISSING_KEY, f"message has no key (expected {key_field})")
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected(ErrorCode.KEY_MISMATCH, "message key is not UTF-8")
        if key_text != expected:
            return Rejected(
                ErrorCode.KEY_MISMATCH, f"message key does not equal {key_field} of the payload"
            )
    return record


def to_dead_letter(
    source: Source,
    value: bytes | None,
    rejected: Rejected,
    *,
    now_ms: int,
    max_payload_bytes: int,
) -> DeadLetter:
    """The dead letter for a rejected message: origin, reason and the raw bytes (maybe cut)."""
    payload = value or b""
    truncated = len(payload) > max_payload_bytes
    if truncated:
        payload = payload[:max_payload_bytes]
    return DeadLetter(
        source_topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        error_code=rejected.code,
        error=rejected.error[:2000],
        key_b64=base64.b64encode(source.key).decode("ascii") if source.key is not None else None,
        payload_b64=base64.b64encode(payload).decode("ascii"),
        payload_truncated=truncated,
        ts_ms=now_ms,
    )


def decode_message(
    spec: TopicSpec[R], value: bytes | None, key: bytes | None, limits: Limits
) -> R | Rejected:
    """``decode`` a message of ``spec``'s topic as the topic declares it."""
    if spec.record is None or spec.max_bytes is None:
        raise ValueError(f"topic {spec.name} declares no record or size limit to decode with")
    return decode(
        spec.record,
        value,
        key=key,
        max_bytes=spec.max_bytes,
        limits=limits,
        key_field=spec.key_field,
    )
