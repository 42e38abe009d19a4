"""``visrec dlq`` on the real broker with a real interest worker: a bad event is dead-lettered,
exported, fixed by hand, replayed and processed; a second replay sends nothing; letters that
would fail again are refused; an unchanged replay re-sends the original bytes."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from click.testing import CliRunner, Result

from schemas import DeadLetter, ErrorCode, EventType, Recommendations, UserEvent
from streams.cli import cli
from streams.kafka.topics import Topics, create_topics, delete_topics
from streams.ops.dlq import REPLAY_HEADER, read_position
from streams.ops.status import collect_kafka
from streams.settings import Settings
from streams.tools.processes import running_worker, settings_env
from tests.support import collect, raw_producer

BAD = {
    "event_id": "dlq-1",
    "user_id": "u1",
    "item_id": "i1",
    "type": "teleport",
    "ts_ms": 1_700_000_000_000,
}


def _visrec(settings: Settings, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=settings_env(settings), input=stdin)


def _triggers(messages: list[object]) -> set[str | None]:
    return {
        Recommendations.from_json_bytes(m.value).trigger_event_id  # type: ignore[attr-defined]
        for m in messages
    }


def test_export_fix_replay_round_trip_with_a_real_worker(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    topics = Topics.from_settings(settings)
    producer = raw_producer(settings)
    producer.send(topics.events.name, key=b"u1", value=b'{"event_id": "garbage"')
    producer.send(topics.events.name, key=b"u1", value=json.dumps(BAD).encode())
    producer.flush()
    try:
        with running_worker(settings, "interests", tmp_path / "worker.log") as worker:
            letters = collect(settings, topics.dead_letter.name, lambda m: len(m) >= 2, 120)
            assert len(letters) == 2, worker.output()[-3000:]

            listed = _visrec(settings, "dlq", "list")
            assert listed.exit_code == 0, listed.output
            assert "invalid_json" in listed.output and "schema_violation" in listed.output
            assert "nothing replayed yet" in listed.output

            exported = _visrec(settings, "dlq", "export", "--code", "schema_violation")
            assert exported.exit_code == 0, exported.output
            lines = [json.loads(line) for line in exported.stdout.splitlines()]
            assert len(lines) == 1
            assert lines[0]["value"] == BAD and lines[0]["key"] == "u1"
            assert "type" in lines[0]["error"]

            # Replaying it unchanged would only dead-letter it again: refused, nothing sent.
            refused = _visrec(settings, "dlq", "replay", "--code", "schema_violation")
            assert refused.exit_code == 2, refused.output
            assert "nothing sent" in refused.output and "schema_violation" in refused.output
            assert read_position(settings) == {}

            # The operator's fix: the type the client meant.
            lines[0]["value"]["type"] = "click"
            fixed = tmp_path / "bad.jsonl"
            fixed.write_text("".join(json.dumps(line) + "\n" for line in lines))
            dry = _visrec(settings, "dlq", "replay", str(fixed), "--dry-run")
            assert dry.exit_code == 0, dry.output
            assert "would replay 1 dead letter(s) (schema_violation: 1)" in dry.output
            assert read_position(settings) == {}
            replayed = _visrec(settings, "dlq", "replay", str(fixed))
            assert replayed.exit_code == 0, replayed.output
            assert "replayed 1 dead letter(s) (schema_violation: 1)" in replayed.output
            # The garbage letter sits below the replayed one: passed over, and said so.
            assert "passed over, not replayed: invalid_json: 1" in replayed.output

            recs = collect(
                settings, topics.recommendations.name, lambda m: "dlq-1" in _triggers(m), 60
            )
            assert "dlq-1" in _triggers(recs), worker.output()[-3000:]
            latest = [
                r
                for r in (Recommendations.from_json_bytes(m.value) for m in recs)
                if r.trigger_event_id == "dlq-1"
            ]
            assert latest[0].user_id == "u1"
            sent = collect(settings, topics.events.name, lambda m: len(m) >= 3, 30)
            [replay_msg] = [m for m in sent if dict(m.headers).get(REPLAY_HEADER)]
            assert UserEvent.from_json_bytes(replay_msg.value).type == EventType.CLICK
            origin = dict(replay_msg.headers)[REPLAY_HEADER].decode()
            assert origin == f"{topics.dead_letter.name}/0/{lines[0]['dlq_offset']}"

            # The position records the replay: a second run sends nothing.
            assert read_position(settings) == {0: lines[0]["dlq_offset"] + 1}
            again = _visrec(settings, "dlq", "replay", str(fixed))
            assert again.exit_code == 0, again.output
            assert "replayed 0 dead letter(s)" in again.output
            assert "1 already replayed" in again.output
            pending = _visrec(settings, "dlq", "list")
            assert "Dead letters (0 of 0)" in pending.output, pending.output
            everything = _visrec(settings, "dlq", "list", "--all")
            assert everything.output.count("(done)") == 2, everything.output

            # An unchanged replay (after a transient failure; no worker emits
            # processing_failed for events, so the letter is written here as one would be).
            event = UserEvent(
                event_id="dlq-2", user_id="u2", item_id="i1", type=EventType.VIEW, ts_ms=1
            )
            letter = DeadLetter(
                source_topic=topics.events.name,
                partition=1,
                offset=0,
                error_code=ErrorCode.PROCESSING_FAILED,
                error="redis timed out",
                key_b64=base64.b64encode(b"u2").decode(),
                payload_b64=base64.b64encode(event.to_json_bytes()).decode(),
                ts_ms=int(time.time() * 1000),
            )
            producer.send(topics.dead_letter.name, key=b"u2", value=letter.to_json_bytes())
            producer.flush()
            # `visrec status` shows the replay group; its lag is the letter not dealt with yet.
            _, groups = collect_kafka(settings)
            [group] = [g for g in groups if g.group_id == f"{settings.app_id}-dlq-replay"]
            assert group.total_lag == 1, group
            unchanged = _visrec(settings, "dlq", "replay", "--source-topic", "events")
            assert unchanged.exit_code == 0, unchanged.output
            assert "replayed 1 dead letter(s) (processing_failed: 1)" in unchanged.output
            recs = collect(
                settings, topics.recommendations.name, lambda m: "dlq-2" in _triggers(m), 60
            )
            assert "dlq-2" in _triggers(recs), worker.output()[-3000:]
            assert worker.alive()
    finally:
        producer.close()
        delete_topics(settings)
