"""``UserEvent``: what a user did to an item, keyed by ``user_id`` on ``visrec.events.v1``."""

from __future__ import annotations

import json
from enum import StrEnum

from pydantic import Field, ValidationInfo, field_validator

from schemas.base import Identifier, Record, TimestampMs, limits_from

ContextValue = str | int | float | bool | None


class EventType(StrEnum):
    """Kinds of interaction, weakest signal first."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"


class UserEvent(Record):
    """One interaction. ``event_id`` is client-generated and is the idempotency key."""

    event_id: Identifier = Field(description="Unique per event; redeliveries share it.")
    user_id: Identifier
    item_id: Identifier
    type: EventType
    ts_ms: TimestampMs
    context: dict[str, ContextValue] | None = Field(
        default=None,
        description="Free-form flat context (session id, page, device); size-limited.",
    )

    @field_validator("context")
    @classmethod
    def _context_size(
        cls, value: dict[str, ContextValue] | None, info: ValidationInfo
    ) -> dict[str, ContextValue] | None:
        if value is None:
            return value
        limit = limits_from(info).max_context_bytes
        if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > limit:
            raise ValueError(f"context larger than {limit} bytes")
        return value

    @property
    def session_id(self) -> str | None:
        """The ``context.session_id`` if the producer sent one."""
        if self.context is None:
            return None
        sid = self.context.get("session_id")
        return sid if isinstance(sid, str) and sid else None
