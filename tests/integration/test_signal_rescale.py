"""Changing a signal half-life on a running shop, on a real Redis (and Kafka for the CLI).

The stored popularity and co-occurrence scores only mean something under the half-life they
were written with. The store records it, a worker configured otherwise refuses to start, and
``visrec signals rescale`` converts every score so that its decayed count at that moment is
unchanged; later increments add on the new scale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from models.interest import decay_score
from schemas import RedisKeys
from streams.cli import cli
from streams.exceptions import HalfLifeMismatch
from streams.kafka.topics import create_topics, delete_topics
from streams.ops.rescale import RESCALE_CHUNK, HalfLives, claim, recorded, rescale
from streams.settings import Settings
from streams.state.backend import RedisBackend
from streams.state.signals import SignalStore
from streams.tools.eval.pipeline import wait_for_group
from streams.tools.processes import running_worker, settings_env
from tests.reference.signals import replay_signals
from tests.support.checks import per_user
from tests.support.signal_logs import OWN_CO_HALF_LIFE, SIGNAL_SETTINGS, signal_log, triples

KEYS = RedisKeys()
DAY_S = 86400.0
SEVEN = HalfLives.of(SIGNAL_SETTINGS)  # pairs with popularity's 7 days
NINETY = HalfLives.of(OWN_CO_HALF_LIFE)  # pairs at 90 days


def stored(client: redis.Redis, key: str) -> dict[str, float]:
    return {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}


def test_a_worker_records_its_half_lives_and_one_configured_otherwise_is_refused(
    client: redis.Redis,
) -> None:
    assert recorded(client, KEYS) is None
    assert claim(client, KEYS, SEVEN) == SEVEN  # the first records
    assert claim(client, KEYS, SEVEN) == SEVEN  # the same: fine
    with pytest.raises(HalfLifeMismatch, match="visrec signals rescale"):
        claim(client, KEYS, NINETY)
    assert recorded(client, KEYS) == SEVEN  # a refused worker changed nothing


@pytest.mark.parametrize("chunk_size", [3, RESCALE_CHUNK])  # several round trips, or one
def test_rescale_keeps_each_decayed_count_and_later_increments_add_on_the_new_scale(
    client: redis.Redis, chunk_size: int
) -> None:
    events = signal_log(120, seed=1)
    early, late = events[:80], events[80:]
    claim(client, KEYS, SEVEN)
    old = RedisBackend.from_settings(client, KEYS, SIGNAL_SETTINGS)
    _, pending, _ = old.apply_and_read(triples(early[:60]))
    old.write_signals(pending)
    old.apply_and_read(triples(early[60:]))  # stopped before draining: entries stay behind
    waiting = {e.user_id for e in early[60:]}
    assert all(client.llen(KEYS.user_outbox(u)) for u in waiting)

    at = early[-1].ts_ms + 3_600_000  # the moment of the change, an hour later
    store = SignalStore(
        client, KEYS, OWN_CO_HALF_LIFE.interest_params(), 100, OWN_CO_HALF_LIFE.popular_max
    )
    report = rescale(client, KEYS, store, SEVEN, NINETY, at, chunk_size=chunk_size)
    assert report.co_sets > 2 * chunk_size or chunk_size == RESCALE_CHUNK

    assert report.drained_users == len(waiting)
    assert not any(client.exists(KEYS.user_outbox(u)) for u in waiting)
    assert report.popularity_factor == 1.0 and 0.0 < report.co_factor < 1.0
    assert recorded(client, KEYS) == NINETY
    claim(client, KEYS, NINETY)  # the new workers start
    with pytest.raises(HalfLifeMismatch):
        claim(client, KEYS, SEVEN)  # an old one would not

    # Every count, outbox entries included, decayed to the moment of the change: the same
    # under the new half-life as it was under the old one. Popularity is untouched.
    log = per_user(events)
    counted = {e.event_id for e in early}
    ref_pop, ref_co = replay_signals(log, SIGNAL_SETTINGS, counted=counted)
    p7, p90 = SIGNAL_SETTINGS.interest_params(), OWN_CO_HALF_LIFE.interest_params()
    assert stored(client, KEYS.popularity()) == pytest.approx(ref_pop, rel=1e-12)
    assert report.co_sets == len(ref_co) and report.members == sum(map(len, ref_co.values()))
    for item, pairs in ref_co.items():
        got = stored(client, KEYS.cooccurrence(item))
        now_counts = {o: decay_score(s, at, p90, p90.half_life_co_s) for o, s in got.items()}
        before = {o: decay_score(s, at, p7, p7.half_life_co_s) for o, s in pairs.items()}
        assert now_counts == pytest.approx(before, rel=1e-9), item

    # Run again: nothing is left to convert.
    again = rescale(client, KEYS, store, NINETY, NINETY, at)
    assert (again.drained_users, again.members, again.co_factor) == (0, 0, 1.0)

    # The new worker's increments add on the same scale: rescaled old pairs plus new ones.
    new = RedisBackend.from_settings(client, KEYS, OWN_CO_HALF_LIFE)
    _, pending, _ = new.apply_and_read(triples(late))
    new.write_signals(pending)
    _, new_co = replay_signals(log, OWN_CO_HALF_LIFE, counted={e.event_id for e in late})
    for item in {e.item_id for e in events}:
        want = {o: s * report.co_factor for o, s in ref_co.get(item, {}).items()}
        for o, s in new_co.get(item, {}).items():
            want[o] = want.get(o, 0.0) + s
        assert stored(client, KEYS.cooccurrence(item)) == pytest.approx(want, rel=1e-9), item


@pytest.mark.timeout(180)
def test_the_commands_refuse_while_a_worker_consumes_and_convert_once_it_stopped(
    settings: Settings, tmp_path: Path
) -> None:
    """`visrec signals rescale` with a worker running: refused. Stopped: converted, and a
    worker configured with the old half-lives then refuses to start."""
    create_topics(settings)
    interest = settings.interest.model_copy(update={"half_life_co_s": 90 * DAY_S})
    changed = settings.model_copy(update={"interest": interest})
    runner = CliRunner()
    try:
        with running_worker(settings, "interests", tmp_path / "worker.log") as worker:
            wait_for_group(settings, f"{settings.app_id}-interests", worker, timeout_s=90.0)
            refused = runner.invoke(cli, ["signals", "rescale"], env=settings_env(changed))
            assert refused.exit_code == 1 and "stop them first" in refused.output
        client = redis.Redis.from_url(settings.redis.url)
        keys = RedisKeys(settings.redis.namespace)
        assert recorded(client, keys) == HalfLives.of(settings.interest)  # the worker's claim
        shown = runner.invoke(cli, ["signals", "show"], env=settings_env(changed))
        assert shown.exit_code == 0 and "they differ" in shown.output
        done = runner.invoke(cli, ["signals", "rescale"], env=settings_env(changed))
        assert done.exit_code == 0, done.output
        assert "recorded the configured half-lives" in done.output
        assert recorded(client, keys) == HalfLives.of(interest)
        client.close()
        # A worker still configured with the old half-lives exits before it consumes.
        stale = subprocess.run(
            [sys.executable, "-c", "from streams.cli import main; main()", "worker", "interests"],
            env={**os.environ, **settings_env(settings)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert stale.returncode == 1 and "visrec signals rescale" in stale.stderr
    finally:
        delete_topics(settings)
