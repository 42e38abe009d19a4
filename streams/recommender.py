"""Building refreshed lists from Redis state and the in-memory index, a batch of users at once.

A batch costs three Redis round trips (user states; co-occurrence neighbours; the lists
cached), one gather of every vector its users' items need, one matrix product (or HNSW walk)
for the visual search of all its users, and the popularity list prepared at most once a
second; what remains per user is array work in ``models.ranking``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from models.interest import InterestParams, blend_columns, top_contributor_ids
from models.ranking import PopularBlock, RankParams, rank
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
        # The ranking keeps the ``candidates`` strongest co-occurring items; the strongest
        # few of each contributor's list are plenty to find them.
        self.co_per_contributor = max(ranking.top_k, -(-2 * ranking.candidates // CONTRIBUTORS))
        self._popular: PopularBlock | None = None
        self._popular_at = 0.0

    def popular(self, now_ms: int) -> PopularBlock:
        """The popularity list, re-read from Redis and re-filtered at most once a second."""
        now = time.monotonic()
        if self._popular is None or now - self._popular_at > POPULAR_TTL_S:
            limit = max(self.ranking.candidates, self.ranking.top_k)
            raw = self.store.popular(limit * 2, now_ms)
            self._popular = PopularBlock.prepare(raw, self.feed.index, limit)
            self._popular_at = now
        return self._popular

    def build(self, last_events: Sequence[UserEvent], now_ms: int) -> list[Recommendations]:
        """Lists for the users of ``last_events`` (one per user), newest state, one batch."""
        # One state of the index for the whole batch: vectors arrive (and models switch) on
        # the state thread and wait for the batch to finish.
        with self.feed.index.consistent():
            return self._build(last_events, now_ms, self.feed.active_model or "")

    def _build(
        self, last_events: Sequence[UserEvent], now_ms: int, model_id: str
    ) -> list[Recommendations]:
        index = self.feed.index
        users = [ev.user_id for ev in last_events]
        states = self.store.load_columns(users)
        # One gather for the vectors of every item of every user of the batch.
        found, matrix = index.get_many(
            list(dict.fromkeys(i for u in users for i in states[u].item_ids))
        )
        row_of = {item_id: row for row, item_id in enumerate(found)}
        vectors: dict[str, np.ndarray] = {}
        contributors: dict[str, list[str]] = {}
        seen: dict[str, set[str]] = {}
        for user_id in users:
            state = states[user_id]
            # Positions of the user's items that have a vector (others are pending).
            embedded = [(p, row_of[i]) for p, i in enumerate(state.item_ids) if i in row_of]
            if embedded:
                positions = np.fromiter((p for p, _ in embedded), dtype=np.intp)
                rows = [r for _, r in embedded]
                vec = blend_columns(state, positions, matrix[rows], now_ms, self.interest)
                if vec is not None:
                    vectors[user_id] = vec
            contributors[user_id] = top_contributor_ids(state, CONTRIBUTORS, now_ms, self.interest)
            seen[user_id] = set(state.item_ids)
        hits: dict[str, list[tuple[str, float]]] = {}
        personal = [u for u in users if u in vectors]
        if personal and index.dim is not None:
            k = max(self.ranking.candidates, self.ranking.top_k)
            queries = np.stack([vectors[u] for u in personal]).astype(np.float32)
            found_hits = index.search_many(queries, k, [seen[u] for u in personal])
            hits = dict(zip(personal, found_hits, strict=True))
        all_contributors = list(dict.fromkeys(c for u in users for c in contributors[u]))
        # Stored (undecayed) scores: the ranking normalises them per user, so decay cancels.
        co_raw = self.store.co_neighbours_raw(all_contributors, self.co_per_contributor)
        popular = self.popular(now_ms)
        lists = []
        for ev in last_events:
            user_id = ev.user_id
            co_scores: dict[str, tuple[float, str]] = {}
            for via in contributors[user_id]:
                for item_id, score in co_raw.get(via, ()):
                    if item_id not in co_scores or score > co_scores[item_id][0]:
                        co_scores[item_id] = (score, via)
            items = rank(
                vectors.get(user_id),
                index,
                seen[user_id],
                co_scores,
                popular,
                contributors[user_id],
                self.ranking,
                hits=hits.get(user_id),
            )
            lists.append(
                Recommendations(
                    user_id=user_id,
                    items=items,
                    model_id=model_id,
                    trigger_event_id=ev.event_id,
                    generated_at_ms=now_ms,
                )
            )
        return lists

    def refresh(self, last_events: Sequence[UserEvent]) -> list[Recommendations]:
        """Lists for each user of ``last_events`` (one per user), cached in Redis."""
        lists = self.build(last_events, int(time.time() * 1000))
        self.store.write_recs_many(lists)
        return lists
