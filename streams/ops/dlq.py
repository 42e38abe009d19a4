"""Dead-letter triage: list, export, fix and replay dead letters to their source topics.

A replay position (consumer group ``<app_id>-dlq-replay`` on the dead-letter topic) is a
watermark per partition: every letter below it has been dealt with, either replayed or passed
over and reported. ``replay`` moves it to just past the last letter it re-sent, never back,
and never re-sends a letter below it (unless forced), so running the same replay twice sends
nothing the second time.

The export format is one JSON object per line, written to be fixed by hand or with ``jq``: the
original value as JSON under ``value`` (``value_text`` when it is not JSON, ``value_b64`` when
it is not UTF-8), the key as text under ``key`` (``key_b64`` when not UTF-8), the letter's
place on the dead-letter topic (``dlq_partition``, ``dlq_offset``) and why it failed.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from schemas import DeadLetter
from streams.edge.codec import Rejected, decode_message
from streams.exceptions import DlqError, InvalidItems
from streams.kafka.config import kafka_python_config
from streams.kafka.producer import make_producer
from streams.kafka.topics import Topics
from streams.settings import Settings

REPLAY_HEADER = "visrec-replay-of"
"""Header on every re-sent message: ``<dead-letter topic>/<partition>/<offset>`` it came from."""


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter and its place on the dead-letter topic."""

    partition: int
    offset: int
    letter: DeadLetter


@dataclass(frozen=True, slots=True)
class Selection:
    """Which letters a command acts on: by error code (none = all) and source topic."""

    codes: frozenset[str] = frozenset()
    source_topic: str | None = None

    def matches(self, error_code: str, source_topic: str) -> bool:
        """Tell whether a letter with this code and source topic is selected."""
        if self.codes and error_code not in self.codes:
            return False
        return self.source_topic is None or source_topic == self.source_topic


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """One message to re-send to ``source_topic``, and the dead letter it answers."""

    dlq_partition: int
    dlq_offset: int
    source_topic: str
    key: bytes | None
    value: bytes
    error_code: str
    truncated: bool = False

    @property
    def label(self) -> str:
        """``<partition>@<offset>`` on the dead-letter topic."""
        return f"{self.dlq_partition}@{self.dlq_offset}"


@dataclass
class ReplayReport:
    """What a replay did: sent, skipped (with why), and the replay position before and after."""

    replayed: list[ReplayItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(dead letter or input line, reason) of everything not sent."""
    already_replayed: int = 0
    position_before: dict[int, int] = field(default_factory=dict)
    position_after: dict[int, int] = field(default_factory=dict)
    passed_over: Counter[str] = field(default_factory=Counter)
    """Letters below the new position that were not replayed, by error code."""


def replay_group(settings: Settings) -> str:
    """The consumer group holding the replay position."""
    return f"{settings.app_id}-dlq-replay"


def count_by_code(letters: Iterable[StoredLetter]) -> list[tuple[str, int]]:
    """Letters per error code, largest first."""
    counts = Counter(s.letter.error_code.value for s in letters)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def export_line(stored: StoredLetter, dlq_topic: str) -> dict[str, Any]:
    """The export form of a dead letter: the original key and value made editable."""
    letter = stored.letter
    out: dict[str, Any] = {
        "dlq_topic": dlq_topic,
        "dlq_partition": stored.partition,
        "dlq_offset": stored.offset,
        "source_topic": letter.source_topic,
        "source_partition": letter.partition,
        "source_offset": letter.offset,
        "error_code": letter.error_code.value,
        "error": letter.error,
        "ts_ms": letter.ts_ms,
        "payload_truncated": letter.payload_truncated,
    }
    key = base64.b64decode(letter.key_b64) if letter.key_b64 is not None else None
    try:
        out["key"] = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        out["key_b64"] = letter.key_b64
    raw = base64.b64decode(letter.payload_b64)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        out["value_b64"] = letter.payload_b64
        return out
    try:
        out["value"] = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        out["value_text"] = text
    return out


def _one_of(obj: Mapping[str, Any], names: Sequence[str], *, required: bool) -> str | None:
    present = [n for n in names if n in obj]
    if len(present) > 1 or (required and not present):
        raise ValueError(f"exactly one of {', '.join(names)} is needed")
    return present[0] if present else None


def _int_field(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def parse_export_line(text: str, dlq_topic: str) -> ReplayItem:
    """Read one (possibly hand-fixed) export line; ValueError says what is wrong with it."""
    obj = json.loads(text, parse_constant=_reject_constant)
    if not isinstance(obj, dict):
        raise ValueError("line is not a JSON object")
    if obj.get("dlq_topic") != dlq_topic:
        raise ValueError(f"dlq_topic is not this deployment's dead-letter topic {dlq_topic}")
    source_topic = obj.get("source_topic")
    if not isinstance(source_topic, str) or not source_topic:
        raise ValueError("source_topic must be a topic name")
    key: bytes | None = None
    key_name = _one_of(obj, ("key", "key_b64"), required=False)
    if key_name is not None and obj[key_name] is not None:
        if not isinstance(obj[key_name], str):
            raise ValueError(f"{key_name} must be a string or null")
        key = (
            obj[key_name].encode("utf-8")
            if key_name == "key"
            else base64.b64decode(obj[key_name], validate=True)
        )
    value_name = _one_of(obj, ("value", "value_text", "value_b64"), required=True)
    if value_name == "value":
        value = json.dumps(
            obj["value"], ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    elif not isinstance(obj[value_name], str):
        raise ValueError(f"{value_name} must be a string")
    elif value_name == "value_text":
        value = obj["value_text"].encode("utf-8")
    else:
        value = base64.b64decode(obj["value_b64"], validate=True)
    return ReplayItem(
        dlq_partition=_int_field(obj, "dlq_partition"),
        dlq_offset=_int_field(obj, "dlq_offset"),
        source_topic=source_topic,
        key=key,
        value=value,
        error_code=str(obj.get("error_code", "")),
        truncated=obj.get("payload_truncated") is True,
    )


def item_from_letter(stored: StoredLetter) -> ReplayItem:
    """The dead letter's original message, unchanged, as a replay item."""
    letter = stored.letter
    return ReplayItem(
        dlq_partition=stored.partition,
        dlq_offset=stored.offset,
        source_topic=letter.source_topic,
        key=base64.b64decode(letter.key_b64) if letter.key_b64 is not None else None,
        value=base64.b64decode(letter.payload_b64),
        error_code=letter.error_code.value,
        truncated=letter.payload_truncated,
    )


def check_item(item: ReplayItem, settings: Settings) -> str | None:
    """Why ``item`` cannot be replayed (truncated, unknown topic, invalid at the edge), or None."""
    if item.truncated:
        return "payload was truncated in the dead letter (supply the whole value in a file)"
    # Only the input topics: a replay must never write where no worker validates.
    spec = next(
        (t for t in Topics.from_settings(settings).inputs() if t.name == item.source_topic), None
    )
    if spec is None:
        return f"{item.source_topic} is not an input topic of this deployment"
    result = decode_message(spec, item.value, item.key, settings.limits.to_limits())
    if isinstance(result, Rejected):
        return f"would be dead-lettered again: {result.code.value}: {result.error}"
    return None


def next_position(
    before: Mapping[int, int],
    sent: Iterable[ReplayItem],
    failed: Iterable[ReplayItem] = (),
) -> dict[int, int]:
    """Past the last sent letter of each partition, never past a failed one, never back."""
    out = dict(before)
    for item in sent:
        out[item.dlq_partition] = max(out.get(item.dlq_partition, 0), item.dlq_offset + 1)
    for item in failed:
        p = item.dlq_partition
        if p in out:
            out[p] = max(before.get(p, 0), min(out[p], item.dlq_offset))
    return out


def _consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        **kafka_python_config(settings.kafka, client_suffix="dlq"),
        group_id=None,
        enable_auto_commit=False,
    )


def read_letters(
    settings: Settings,
    start: Mapping[int, int] | None = None,
    stop: Mapping[int, int] | None = None,
    on_unreadable: Callable[[int, int, str], None] | None = None,
    idle_timeout_s: float = 30.0,
) -> Iterator[StoredLetter]:
    """Dead letters from ``start`` (default: the beginning) to the end as of now, by partition."""
    topic = Topics.from_settings(settings).dead_letter.name
    consumer = _consumer(settings)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise DlqError(f"topic {topic} does not exist (run `visrec topics create`)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        begins = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            first = max(int(begins[tp]), (start or {}).get(tp.partition, 0))
            last = int(ends[tp]) if stop is None else min(int(ends[tp]), stop.get(tp.partition, 0))
            if first >= last:
                continue
            consumer.assign([tp])
            consumer.seek(tp, first)
            deadline = time.monotonic() + idle_timeout_s
            while consumer.position(tp) < last:
                records = consumer.poll(timeout_ms=500).get(tp, [])
                if records:
                    deadline = time.monotonic() + idle_timeout_s
                elif time.monotonic() > deadline:
                    raise DlqError(f"no progress reading {topic}[{tp.partition}] for a while")
                for record in records:
                    if record.offset >= last:
                        break
                    try:
                        letter = DeadLetter.from_json_bytes(record.value)
                    except ValidationError as exc:
                        if on_unreadable is not None:
                            on_unreadable(tp.partition, record.offset, str(exc.errors()[0]["msg"]))
                        continue
                    yield StoredLetter(tp.partition, record.offset, letter)
    finally:
        consumer.close()


def _admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(**kafka_python_config(settings.kafka, client_suffix="dlq-admin"))


def read_position(settings: Settings) -> dict[int, int]:
    """The replay position per dead-letter partition (missing = nothing replayed there)."""
    topic = Topics.from_settings(settings).dead_letter.name
    group = replay_group(settings)
    admin = _admin(settings)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: int(m.offset) for tp, m in committed.items() if tp.topic == topic}


def commit_position(settings: Settings, position: Mapping[int, int]) -> None:
    """Store the replay position in the replay consumer group."""
    topic = Topics.from_settings(settings).dead_letter.name
    offsets = {
        TopicPartition(topic, p): OffsetAndMetadata(off, "visrec dlq replay", -1)
        for p, off in position.items()
    }
    admin = _admin(settings)
    try:
        result = admin.alter_group_offsets(replay_group(settings), offsets)
    finally:
        admin.close()
    failed = {tp.partition: err.__name__ for tp, err in result.items() if err.errno != 0}
    if failed:
        raise DlqError(f"could not store the replay position: {failed}")


def pending_letters(
    settings: Settings,
    selection: Selection = Selection(),
    *,
    include_replayed: bool = False,
    on_unreadable: Callable[[int, int, str], None] | None = None,
) -> Iterator[StoredLetter]:
    """Selected letters at or past the replay position (all of them with ``include_replayed``)."""
    start = None if include_replayed else read_position(settings)
    for stored in read_letters(settings, start, on_unreadable=on_unreadable):
        if selection.matches(stored.letter.error_code.value, stored.letter.source_topic):
            yield stored


def _send(settings: Settings, todo: list[ReplayItem], report: ReplayReport) -> list[ReplayItem]:
    """Send ``todo`` (each naming its letter in a header); return the items that failed.

    Sent items go to ``report.replayed``, failures to ``report.skipped`` too.
    """
    dlq_topic = Topics.from_settings(settings).dead_letter.name
    producer = make_producer(settings)
    failed: list[ReplayItem] = []
    try:
        futures = []
        for item in todo:
            origin = f"{dlq_topic}/{item.dlq_partition}/{item.dlq_offset}".encode()
            future = producer.send(
                item.source_topic, key=item.key, value=item.value, headers=[(REPLAY_HEADER, origin)]
            )
            futures.append((item, future))
        producer.flush()
        for item, future in futures:
            try:
                future.get(timeout=settings.kafka.request_timeout_s)
                report.replayed.append(item)
            except KafkaError as exc:
                failed.append(item)
                report.skipped.append((item.label, f"send failed: {exc!r}"))
    finally:
        producer.close()
    return failed


def replay(
    settings: Settings,
    items: Iterable[ReplayItem],
    *,
    skip_invalid: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-send ``items`` to their source topics and advance the replay position past them.

    Items below the position were replayed before and are skipped unless ``force``. Every
    item is checked first; if any would be dead-lettered again, nothing is sent
    (``InvalidItems``) unless ``skip_invalid``, which skips them instead. A failed send is
    reported in ``skipped`` and the position stays below it.
    """
    report = ReplayReport(position_before=read_position(settings))
    todo: list[ReplayItem] = []
    problems: list[tuple[str, str]] = []
    for item in items:
        if not force and item.dlq_offset < report.position_before.get(item.dlq_partition, 0):
            report.already_replayed += 1
            continue
        why = check_item(item, settings)
        if why is None:
            todo.append(item)
        elif item.truncated:
            report.skipped.append((item.label, why))
        else:
            problems.append((item.label, why))
    if problems and not skip_invalid:
        raise InvalidItems(problems)
    report.skipped.extend(problems)
    if dry_run:
        report.position_after = next_position(report.position_before, todo)
        report.replayed = todo
        return report
    failed = _send(settings, todo, report)
    report.position_after = next_position(report.position_before, report.replayed, failed)
    if report.position_after != report.position_before:
        commit_position(settings, report.position_after)
        sent = {(i.dlq_partition, i.dlq_offset) for i in report.replayed}
        for stored in read_letters(settings, report.position_before, report.position_after):
            if (stored.partition, stored.offset) not in sent:
                report.passed_over[stored.letter.error_code.value] += 1
    return report
