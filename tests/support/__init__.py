"""Test helpers, in one place: Kafka clients and the replay driver (``kafka``), checks of state,
lists and metrics (``checks``), and the worker unit tests' stand-ins (``standins``, imported
from there: only those tests need them)."""

from tests.support.checks import (
    STATE_TOL,
    assert_signals_are_offline_replay,
    assert_state_is_offline_replay,
    latest_lists,
    latest_triggers,
    metric_value,
    per_user,
    product_message,
    scrape_metric,
)
from tests.support.kafka import (
    Replay,
    TopicReader,
    collect,
    committed_offsets,
    group_members,
    list_answering,
    raw_producer,
    send_event,
)

__all__ = [
    "STATE_TOL",
    "Replay",
    "TopicReader",
    "assert_signals_are_offline_replay",
    "assert_state_is_offline_replay",
    "collect",
    "committed_offsets",
    "group_members",
    "latest_lists",
    "latest_triggers",
    "list_answering",
    "metric_value",
    "per_user",
    "product_message",
    "raw_producer",
    "scrape_metric",
    "send_event",
]
