"""A freshness weight through the real worker: a product's arrival time travels from its
record to the index (announced live, and read back from Redis at start-up), and a new arrival
the shopper's vector alone would not retrieve reaches the list as ``new_arrival``; with
``interest.stale_after_s``, it reaches an idle shopper's list too, without a click of theirs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from schemas import EventType, Recommendations, UserEvent
from streams.kafka.topics import Topics, create_topics
from streams.ops.item_vectors import publish_item_vectors
from streams.settings import Settings
from streams.tools.eval.pipeline import wait_for_group
from streams.tools.processes import running_worker
from tests.support import raw_producer, send_event
from tests.support.kafka import TopicReader

MODEL = "fresh-test"
DIM = 16
NOW_MS = 1_764_000_000_000
DAY_MS = 86_400_000


def _catalogue() -> dict[str, np.ndarray]:
    """40 items near the first axis (what the shopper likes) and 40 near the second."""
    rng = np.random.default_rng(0)
    out = {}
    for k in range(80):
        v = 0.3 * rng.standard_normal(DIM)
        v[0 if k < 40 else 1] += 3.0
        out[f"{'a' if k < 40 else 'b'}{k}"] = v / np.linalg.norm(v)
    return out


def _announce_new_b(settings: Settings, catalogue: dict[str, np.ndarray]) -> None:
    """A product like the b items, arrived an hour before a day after NOW_MS, sent live."""
    publish_item_vectors(
        settings,
        MODEL,
        {"new-b": catalogue["b40"]},
        arrived_ms={"new-b": NOW_MS + DAY_MS - 3_600_000},
        activate=False,
    )


def _click(settings: Settings, n: int, item: str, ts_ms: int) -> Recommendations:
    event = UserEvent(
        event_id=f"e{n}", user_id="shopper", item_id=item, type=EventType.CLICK, ts_ms=ts_ms
    )
    return send_event(settings, event)


def _fresh(settings: Settings, **interest: float) -> Settings:
    knobs = {
        "fresh_weight": 2.0,
        "fresh_half_life_s": 86_400.0,
        "top_k": 5,
        "candidates": 10,
        "popularity_weight": 0.0,
    }
    return settings.model_copy(
        update={"interest": settings.interest.model_copy(update=knobs | interest)}
    )


def test_new_arrivals_ranked_by_freshness_live_and_after_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    settings = _fresh(settings)
    create_topics(settings)
    catalogue = _catalogue()
    old = {i: NOW_MS - 60 * DAY_MS for i in catalogue}  # two months old
    publish_item_vectors(settings, MODEL, catalogue, arrived_ms=old)
    group = f"{settings.app_id}-interests"
    with running_worker(settings, "interests", tmp_path / "interests-1.log") as worker:
        wait_for_group(settings, group, worker, timeout_s=90.0)
        first = _click(settings, 1, "a0", NOW_MS)
        # Two months old, everything: the list is a0's look-alikes, for that reason.
        assert all(i.item_id.startswith("a") for i in first.items)
        assert {i.reason for i in first.items} == {"similar_to:a0"}

        # A new product unlike anything the shopper touched, announced while the worker runs:
        # only its arrival (an hour before the next click) can bring it into the list.
        _announce_new_b(settings, catalogue)
        deadline = time.monotonic() + 30
        while True:
            lst = _click(settings, int(time.monotonic() * 10), "a1", NOW_MS + DAY_MS)
            if "new-b" in [i.item_id for i in lst.items] or time.monotonic() > deadline:
                break
        top = lst.items[0]
        assert (top.item_id, top.reason) == ("new-b", "new_arrival")
        assert all(i.item_id.startswith("a") for i in lst.items[1:])
        assert worker.alive()

    # A fresh worker builds its index from Redis: the arrival time comes with the vector.
    with running_worker(settings, "interests", tmp_path / "interests-2.log") as worker:
        wait_for_group(settings, group, worker, timeout_s=90.0)
        again = _click(settings, 9_999_999_999, "a2", NOW_MS + DAY_MS)
        assert (again.items[0].item_id, again.items[0].reason) == ("new-b", "new_arrival")
        # Thirty days later the product is old news: its freshness has decayed away.
        later = _click(settings, 9_999_999_998, "a3", NOW_MS + 31 * DAY_MS)
        assert "new-b" not in [i.item_id for i in later.items]


def test_an_idle_shoppers_list_is_ranked_again_with_a_new_arrival(
    settings: Settings, tmp_path: Path
) -> None:
    settings = _fresh(settings, stale_after_s=3600.0)
    create_topics(settings)
    topics = Topics.from_settings(settings)
    catalogue = _catalogue()
    publish_item_vectors(settings, MODEL, catalogue, arrived_ms=dict.fromkeys(catalogue, 0))
    producer = raw_producer(settings)

    def click(user: str, event_id: str, item: str, ts_ms: int) -> None:
        ev = UserEvent(
            event_id=event_id, user_id=user, item_id=item, type=EventType.CLICK, ts_ms=ts_ms
        )
        # One partition for both shoppers: a batch re-ranks the idle users of its partitions.
        producer.send(topics.events.name, key=user.encode(), value=ev.to_json_bytes(), partition=0)
        producer.flush()

    def shoppers_lists(messages: list[Any]) -> list[Recommendations]:
        lists = [Recommendations.from_json_bytes(m.value) for m in messages]
        return [r for r in lists if r.user_id == "shopper"]

    with running_worker(settings, "interests", tmp_path / "interests.log") as worker:
        wait_for_group(settings, f"{settings.app_id}-interests", worker, timeout_s=90.0)
        click("shopper", "s1", "a0", NOW_MS)
        reader = TopicReader(settings, topics.recommendations.name)
        # The product arrives only once the shopper's own list is out: on a slow box the
        # worker could otherwise index it before ranking that click.
        assert reader.until(lambda new: bool(shoppers_lists(new)), timeout_s=60.0)
        _announce_new_b(settings, catalogue)
        # The shopper stays away; another shopper clicks every 2 h of event time from a day
        # later, until a batch re-ranks the idle shopper's list with the new product in it.
        found: list[Recommendations] = []
        for k in range(60):
            click("other", f"o{k}", "b41", NOW_MS + DAY_MS + k * 2 * 3_600_000)
            time.sleep(0.5)
            reader.poll(timeout_ms=500)
            found = shoppers_lists(reader.messages)
            if any("new-b" in [i.item_id for i in r.items] for r in found):
                break
        reader.close()
        producer.close()
        assert worker.alive()
    first, *again = found
    assert all(i.item_id.startswith("a") for i in first.items)
    assert again and all(r.trigger_event_id == "s1" for r in again)  # no event of theirs
    fresh = next(r for r in again if "new-b" in [i.item_id for i in r.items])
    assert (fresh.items[0].item_id, fresh.items[0].reason) == ("new-b", "new_arrival")
