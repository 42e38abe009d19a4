"""``Recommendations``: a user's refreshed ordered list, keyed by ``user_id``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Identifier, Record, TimestampMs


class RecommendedItem(BaseModel):
    """One entry of a list, with why it is there."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    item_id: Identifier
    score: float = Field(allow_inf_nan=False)
    reason: str = Field(
        min_length=1,
        max_length=600,
        description="similar_to:<item_id>, also_viewed_with:<item_id>, popular, trending ...",
    )


class Recommendations(Record):
    """The list emitted after the events up to ``trigger_event_id`` were applied."""

    user_id: Identifier
    items: list[RecommendedItem] = Field(max_length=1000)
    model_id: str = Field(max_length=128)
    trigger_event_id: str | None = Field(default=None, max_length=1024)
    generated_at_ms: TimestampMs
