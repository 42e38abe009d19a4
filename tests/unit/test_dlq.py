from __future__ import annotations

import base64
import json

import pytest

from schemas import DeadLetter, ErrorCode, EventType, UserEvent
from streams.ops.dlq import (
    ReplayItem,
    Selection,
    StoredLetter,
    check_item,
    count_by_code,
    export_line,
    item_from_letter,
    next_position,
    parse_export_line,
)
from streams.settings import Settings, TopicSettings

SETTINGS = Settings(topics=TopicSettings(prefix="p"))
EVENTS = "p.events.v1"
DLQ = "p.dead-letter.v1"
GOOD = UserEvent(event_id="e1", user_id="u1", item_id="i1", type=EventType.CLICK, ts_ms=1)


def _letter(
    value: bytes,
    key: bytes | None = b"u1",
    code: ErrorCode = ErrorCode.SCHEMA_VIOLATION,
    truncated: bool = False,
) -> StoredLetter:
    letter = DeadLetter(
        source_topic=EVENTS,
        partition=2,
        offset=41,
        error_code=code,
        error="type: Input should be 'view', 'click', 'add_to_cart' or 'purchase'",
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        payload_b64=base64.b64encode(value).decode(),
        payload_truncated=truncated,
        ts_ms=5,
    )
    return StoredLetter(0, 7, letter)


def _round_trip(line: dict[str, object]) -> ReplayItem:
    return parse_export_line(json.dumps(line), DLQ)


def test_export_makes_a_json_value_editable_and_the_fix_is_what_gets_sent() -> None:
    bad = GOOD.model_dump(mode="json") | {"type": "teleport"}
    line = export_line(_letter(json.dumps(bad).encode()), DLQ)
    assert line["value"] == bad and line["key"] == "u1"
    assert (line["dlq_partition"], line["dlq_offset"], line["source_offset"]) == (0, 7, 41)
    assert check_item(_round_trip(line), SETTINGS) is not None  # unchanged, still invalid
    line["value"]["type"] = "click"
    item = _round_trip(line)
    assert (item.source_topic, item.key, item.dlq_partition, item.dlq_offset) == (
        EVENTS,
        b"u1",
        0,
        7,
    )
    assert UserEvent.from_json_bytes(item.value) == GOOD
    assert check_item(item, SETTINGS) is None


def test_non_json_and_non_utf8_payloads_and_keys_round_trip_byte_for_byte() -> None:
    text = b'{"event_id": "x", "user_'
    line = export_line(_letter(text, code=ErrorCode.INVALID_JSON), DLQ)
    assert line["value_text"] == text.decode() and "value" not in line
    assert _round_trip(line).value == text
    binary = b"\xc3\x28\xa0\xa1 not utf-8"
    line = export_line(_letter(binary, key=b"\xff\xfe"), DLQ)
    assert "value_b64" in line and "key_b64" in line and "key" not in line
    item = _round_trip(line)
    assert (item.value, item.key) == (binary, b"\xff\xfe")
    assert item == item_from_letter(_letter(binary, key=b"\xff\xfe"))
    null_key = export_line(_letter(GOOD.to_json_bytes(), key=None), DLQ)
    assert null_key["key"] is None and _round_trip(null_key).key is None


def test_malformed_lines_are_refused_with_the_reason() -> None:
    line = export_line(_letter(GOOD.to_json_bytes()), DLQ)
    cases: list[tuple[dict[str, object], str]] = [
        (line | {"dlq_topic": "other.dead-letter.v1"}, "dlq_topic"),
        (line | {"dlq_offset": -1}, "dlq_offset"),
        (line | {"dlq_partition": True}, "dlq_partition"),
        (line | {"value_text": "{}"}, "exactly one of value"),
        ({k: v for k, v in line.items() if k != "value"}, "exactly one of value"),
        (line | {"source_topic": ""}, "source_topic"),
        (line | {"key": 7}, "key must be"),
    ]
    for bad, why in cases:
        with pytest.raises(ValueError, match=why):
            parse_export_line(json.dumps(bad), DLQ)
    with pytest.raises(ValueError):
        parse_export_line('{"value": NaN}', DLQ)
    no_value = {k: v for k, v in line.items() if k != "value"}
    with pytest.raises(ValueError):
        parse_export_line(json.dumps(no_value | {"value_b64": "%%%"}), DLQ)


def test_truncated_unknown_topic_and_wrong_key_cannot_be_replayed() -> None:
    ok = item_from_letter(_letter(GOOD.to_json_bytes()))
    assert check_item(ok, SETTINGS) is None
    truncated = item_from_letter(_letter(GOOD.to_json_bytes(), truncated=True))
    assert "truncated" in (check_item(truncated, SETTINGS) or "")
    elsewhere = ReplayItem(0, 1, "p.recommendations.v1", b"u1", GOOD.to_json_bytes(), "x")
    assert "not an input topic" in (check_item(elsewhere, SETTINGS) or "")
    wrong_key = item_from_letter(_letter(GOOD.to_json_bytes(), key=b"u2"))
    assert "key_mismatch" in (check_item(wrong_key, SETTINGS) or "")
    no_key = item_from_letter(_letter(GOOD.to_json_bytes(), key=None))
    assert "missing_key" in (check_item(no_key, SETTINGS) or "")


def test_position_moves_past_the_last_sent_letter_never_past_a_failed_one_never_back() -> None:
    def item(partition: int, offset: int) -> ReplayItem:
        return ReplayItem(partition, offset, EVENTS, b"u", b"{}", "schema_violation")

    sent = [item(0, 4), item(1, 8), item(1, 5), item(2, 0)]
    assert next_position({0: 10, 1: 3}, sent) == {0: 10, 1: 9, 2: 1}
    assert next_position({0: 10}, []) == {0: 10}
    # A failed send at 1@6 holds partition 1 there, even though 1@8 went through.
    assert next_position({0: 10, 1: 3}, sent, [item(1, 6)]) == {0: 10, 1: 6, 2: 1}
    # A failed forced re-send below the position does not move it back.
    assert next_position({0: 10}, [], [item(0, 2)]) == {0: 10}


def test_selection_and_counts() -> None:
    sel = Selection(frozenset({"invalid_json"}), EVENTS)
    assert sel.matches("invalid_json", EVENTS)
    assert not sel.matches("schema_violation", EVENTS)
    assert not sel.matches("invalid_json", "p.products.v1")
    assert Selection().matches("anything", "any")
    letters = [
        _letter(b"x", code=ErrorCode.INVALID_JSON),
        _letter(b"y", code=ErrorCode.SCHEMA_VIOLATION),
        _letter(b"z", code=ErrorCode.INVALID_JSON),
    ]
    assert count_by_code(letters) == [("invalid_json", 2), ("schema_violation", 1)]
