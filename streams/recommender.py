"""Building a user's refreshed list from Redis state and the in-memory index.

Runs on the interest worker's state thread (the only thread touching the index).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.interest import InterestParams, top_contributors, user_vector
from models.ranking import RankParams, rank
from schemas import Recommendations, UserEvent
from streams.user_state import UserStateStore

if TYPE_CHECKING:
    from workers.item_index import IndexFeed

POPULAR_TTL_S = 1.0
CONTRIBUTORS = 10


class Recommender:
    """Refreshes lists for users whose state just changed."""

    def __init__(
        self,
        store: UserStateStore,
        feed: IndexFeed,
        interest: InterestParams,
        ranking: RankParams,
    ) -> None:
        """Read state from ``store``, vectors from ``feed.index``."""
        self.store = store
        self.feed = feed
        self.interest = interest
        self.ranking = ranking
        self._popular: list[tuple[str, float]] = []
        self._popular_at = 0.0

    def popular(self, now_ms: int) -> list[tuple[str, float]]:
        """The popularity list, re-read from Redis at most once a second."""
        now = time.monotonic()
        if now - self._popular_at > POPULAR_TTL_S:
            self._popular = self.store.popular(max(200, self.ranking.candidates), now_ms)
            self._popular_at = now
        return self._popular

    def for_user(self, user_id: str, trigger_event_id: str | None, now_ms: int) -> Recommendations:
        """One user's list now."""
        index = self.feed.index
        interest = self.store.load(user_id)
        vec = user_vector(interest, index.get, now_ms, self.interest)
        contributors = [
            item_id
            for item_id, _ in top_contributors(
                interest, CONTRIBUTORS, now_ms=now_ms, params=self.interest
            )
        ]
        co_raw = self.store.co_neighbours(contributors, self.ranking.candidates, now_ms=now_ms)
        co_scores: dict[str, tuple[float, str]] = {}
        for via, neighbours in co_raw.items():
            for item_id, score in neighbours:
                if item_id not in co_scores or score > co_scores[item_id][0]:
                    co_scores[item_id] = (score, via)
        items = rank(
            vec,
            index,
            self.store.seen(user_id),
            co_scores,
            self.popular(now_ms),
            contributors,
            self.ranking,
        )
        return Recommendations(
            user_id=user_id,
            items=items,
            model_id=self.feed.active_model or "",
            trigger_event_id=trigger_event_id,
            generated_at_ms=now_ms,
        )

    def refresh(self, last_events: Sequence[UserEvent]) -> list[Recommendations]:
        """Lists for each user of ``last_events`` (one per user), cached in Redis."""
        now_ms = int(time.time() * 1000)
        lists = [self.for_user(ev.user_id, ev.event_id, now_ms) for ev in last_events]
        self.store.write_recs_many(lists)
        return lists
