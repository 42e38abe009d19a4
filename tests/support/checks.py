"""Checks the integration and fault tests share: Redis state and signals against the offline
replay of the log, the latest list per user on the recommendations topic, metrics scraped from
a worker, and product messages."""

from __future__ import annotations

import base64
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
import redis

from models.interest import UserInterest
from schemas import ProductAttributes, ProductImage, Recommendations, RedisKeys, UserEvent
from streams.settings import InterestSettings, Settings
from streams.state.user_state import UserStateStore
from tests.reference.interest import apply_events
from tests.reference.signals import replay_signals

STATE_TOL = 1e-9
"""Redis applies the same arithmetic as the reference rule: states agree to rounding."""


def per_user(log: Iterable[UserEvent]) -> dict[str, list[UserEvent]]:
    """The log split by user, each user's events in log order."""
    out: dict[str, list[UserEvent]] = defaultdict(list)
    for event in log:
        out[event.user_id].append(event)
    return dict(out)


def assert_state_is_offline_replay(
    settings: Settings, events_by_user: Mapping[str, Sequence[UserEvent]]
) -> None:
    """Every user's state in Redis is exactly ``apply_events`` over their log: each event
    applied once (none lost, none doubled), in order, to ``STATE_TOL``."""
    client = redis.Redis.from_url(settings.redis.url)
    try:
        store = UserStateStore.from_settings(client, RedisKeys(), settings.interest)
        got = store.load_many(sorted(events_by_user))
        for user, events in events_by_user.items():
            want = apply_events(
                UserInterest.empty(), events, store.params, settings.interest.seen_max
            )
            state = got[user]
            assert state.n_events == want.n_events, (user, state.n_events, want.n_events)
            assert [w.item_id for w in state.weights] == [w.item_id for w in want.weights], user
            for g, e in zip(state.weights, want.weights, strict=True):
                assert abs(g.log_long - e.log_long) < STATE_TOL, (user, g, e)
                assert abs(g.log_short - e.log_short) < STATE_TOL, (user, g, e)
    finally:
        client.close()


def assert_signals_are_offline_replay(
    client: redis.Redis[Any],
    events_by_user: Mapping[str, Sequence[UserEvent]],
    settings: InterestSettings,
    items: Iterable[str],
    rel: float,
) -> None:
    """Popularity and the co-occurrence lists of ``items`` are exactly the offline recomputation
    of the log (``tests.reference.signals``, to ``rel``): no increment lost, none counted twice;
    and the users' signal outboxes are empty (nothing left undrained)."""
    want_pop, want_co = replay_signals(events_by_user, settings)
    keys = RedisKeys()

    def stored(key: str) -> dict[str, float]:
        return {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}

    got_pop = stored(keys.popularity())
    assert got_pop.keys() == want_pop.keys()
    for item, score in want_pop.items():
        assert got_pop[item] == pytest.approx(score, rel=rel), item
    for item in items:
        want = want_co.get(item, {})
        assert stored(keys.cooccurrence(item)) == pytest.approx(want, rel=rel), item
    assert sum(client.llen(keys.user_outbox(u)) for u in events_by_user) == 0


def latest_lists(messages: Iterable[Any]) -> dict[str, Recommendations]:
    """Each user's last list among recommendation-topic ``messages`` (in topic order)."""
    latest: dict[str, Recommendations] = {}
    for m in messages:
        recs = Recommendations.from_json_bytes(m.value)
        latest[recs.user_id] = recs
    return latest


def latest_triggers(messages: Iterable[Any]) -> dict[str, str | None]:
    """The event each user's last list answers."""
    return {u: r.trigger_event_id for u, r in latest_lists(messages).items()}


def metric_value(text: str, name: str) -> float:
    """The sum of every sample in Prometheus ``text`` whose line starts with ``name`` (a
    metric name, or a name with the start of its labels: ``x_total{code="a"``)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def scrape_metric(port: int, name: str) -> float:
    """``metric_value`` of a worker's ``/metrics`` on ``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return metric_value(resp.read().decode(), name)


def product_message(item_id: str, data: bytes, *, ts_ms: int = 1, **attrs: Any) -> bytes:
    """A ``ProductImage`` carrying ``data`` inline, in its wire form."""
    return ProductImage(
        item_id=item_id,
        image_b64=base64.b64encode(data).decode(),
        attributes=ProductAttributes(**attrs),
        ts_ms=ts_ms,
    ).to_json_bytes()
