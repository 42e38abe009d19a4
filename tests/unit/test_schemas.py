from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from pydantic import ValidationError

from schemas import (
    CONTRACTS,
    DeadLetter,
    ErrorCode,
    EventType,
    ItemVector,
    Limits,
    ProductImage,
    Recommendations,
    RecommendedItem,
    RedisKeys,
    UserEvent,
    VectorDType,
)
from schemas.export import OUT, render

EXAMPLES = {
    "UserEvent": UserEvent(
        event_id="e-1",
        user_id="u-1",
        item_id="i-1",
        type=EventType.CLICK,
        ts_ms=1_700_000_000_000,
        context={"session_id": "s1", "page": 3},
    ),
    "ProductImage": ProductImage(item_id="i-1", image_uri="https://example.com/a.jpg", ts_ms=1),
    "ItemVector": ItemVector.from_array("i-1", "m1", np.arange(4, dtype=np.float32), 1),
    "Recommendations": Recommendations(
        user_id="u-1",
        items=[RecommendedItem(item_id="i-2", score=0.9, reason="similar_to:i-1")],
        model_id="m1",
        trigger_event_id="e-1",
        generated_at_ms=2,
    ),
    "DeadLetter": DeadLetter(
        source_topic="visrec.events.v1",
        partition=0,
        offset=7,
        error_code=ErrorCode.INVALID_JSON,
        error="bad",
        payload_b64="e30=",
        ts_ms=3,
    ),
}


def test_committed_json_schemas_are_current() -> None:
    for filename, text in render().items():
        path = OUT / filename
        assert path.exists(), f"{path} missing: run python -m schemas.export"
        assert path.read_text() == text, f"{path} is stale: run python -m schemas.export"


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_examples_round_trip_and_validate_against_json_schema(name: str) -> None:
    record = EXAMPLES[name]
    wire = record.to_json_bytes()
    assert type(record).from_json_bytes(wire) == record
    schema = json.loads((OUT / f"{name}.json").read_text())
    jsonschema.validate(json.loads(wire), schema)


def test_product_needs_exactly_one_image_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ProductImage(item_id="a", ts_ms=1)
    with pytest.raises(ValidationError, match="exactly one"):
        ProductImage(item_id="a", image_b64="AA==", image_uri="file:///x", ts_ms=1)
    with pytest.raises(ValidationError, match="scheme"):
        ProductImage(item_id="a", image_uri="gopher://x", ts_ms=1)


@pytest.mark.parametrize(
    "patch",
    [
        {"ts_ms": -1},
        {"ts_ms": 2**63},
        {"ts_ms": 1.5},
        {"ts_ms": "1"},
        {"type": "like"},
        {"event_id": ""},
        {"user_id": "a\u0007b"},
        {"item_id": "x" * 300},
        {"extra": 1},
        {"context": {"blob": "x" * 5000}},
        {"context": {"score": float("nan")}},
        {"context": {"score": float("inf")}},
    ],
)
def test_user_event_rejects(patch: dict[str, object]) -> None:
    base = {"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts_ms": 5}
    with pytest.raises(ValidationError):
        UserEvent.from_obj({**base, **patch})


def test_unicode_ids_are_fine_and_limits_are_settings() -> None:
    base = {"event_id": "é-∆", "user_id": "ユーザー", "item_id": "i", "type": "view", "ts_ms": 5}
    assert UserEvent.from_obj(base).user_id == "ユーザー"
    with pytest.raises(ValidationError):
        UserEvent.from_obj(base, Limits(max_id_length=3))


def test_item_vector_checks_length_and_finiteness() -> None:
    vec = ItemVector.from_array("i", "m", np.ones(8), 1, dtype=VectorDType.FLOAT16)
    assert vec.dim == 8
    np.testing.assert_array_equal(vec.to_array(), np.ones(8, dtype=np.float32))
    with pytest.raises(ValidationError, match="length"):
        ItemVector.from_obj({**json.loads(vec.to_json_bytes()), "dim": 9})
    with pytest.raises(ValidationError, match="NaN"):
        ItemVector.from_array("i", "m", np.array([1.0, np.nan]), 1)


def test_user_keys_share_one_cluster_hash_tag() -> None:
    keys = RedisKeys()
    user_keys = [keys.user_state("u1"), keys.user_seen("u1"), keys.user_applied("u1")]
    tags = {k[k.index("{") + 1 : k.index("}")] for k in user_keys}
    assert tags == {"u:u1"}
    assert all(k.startswith("visrec:v1:") for k in user_keys)
