"""Hostile input, property-based: the edge decoder, image decoding and the interest update.

Each test states what must hold for *any* input hypothesis builds: the decoder returns a
record or a ``Rejected`` with a dead-letter code and never raises; image decoding raises
nothing but ``ImageError`` on arbitrary or mutated real files; the interest rule is idempotent,
order-independent and finite. Named hostile images (CMYK, 16-bit, palette, 10k-frame GIF,
60 KB EXIF, header bombs) are pinned as explicit cases. Run with
``--hypothesis-show-statistics`` to see how many cases each property tried.
"""

from __future__ import annotations

import io
import json
import math
import struct
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import GifImagePlugin, Image

from models.exceptions import ImageError
from models.interest import (
    MAX_EVENT_WEIGHT,
    InterestParams,
    UserInterest,
    decay_score,
    score_increment,
)
from models.vision.images import ImageLimits, decode_rgb
from schemas import CONTRACTS, ErrorCode, EventType, Limits, Record, UserEvent
from schemas.base import MAX_TS_MS
from streams.edge.codec import Rejected, decode
from streams.settings import InterestSettings
from tests.photos import sample_arrays
from tests.reference.interest import apply_events, user_vector

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
LIMITS = Limits()
# A lower pixel cap than production keeps mutated headers that claim big pictures cheap.
IMAGE_LIMITS = ImageLimits(max_bytes=4 * 1024 * 1024, max_pixels=2_000_000, min_side=8)
KEY_FIELDS: dict[str, str | None] = {
    "UserEvent": "user_id",
    "ProductImage": "item_id",
    "ItemVector": "item_id",
    "Recommendations": "user_id",
    "DeadLetter": None,
}
CODES = set(ErrorCode)
IMAGE_CODES = {c.value for c in ErrorCode if c.value.startswith("image_")}


def _check_outcome(model: type[Record], result: object) -> None:
    """The decoder's contract: the record itself, or a rejection carrying a dead-letter code."""
    if isinstance(result, Rejected):
        assert result.code in CODES and isinstance(result.error, str) and result.error
    else:
        assert isinstance(result, model)
        # Whatever validated must survive its own wire form unchanged.
        assert type(result).from_json_bytes(result.to_json_bytes(), LIMITS) == result


# --- streams.edge.codec.decode --------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
FIELD_NAMES = sorted({f for m in CONTRACTS.values() for f in m.model_fields})


@FUZZ
@given(
    st.sampled_from(sorted(CONTRACTS)),
    st.none() | st.binary(max_size=2048),
    st.none() | st.binary(max_size=64),
    st.integers(1, 4096),
)
@example("UserEvent", b'{"event_id": NaN}', b"u", 4096)
@example("UserEvent", b"\xff\xfe" * 10, None, 4096)
def test_decode_never_raises_on_arbitrary_bytes(
    name: str, value: bytes | None, key: bytes | None, max_bytes: int
) -> None:
    model = CONTRACTS[name]
    result = decode(
        model, value, key=key, max_bytes=max_bytes, limits=LIMITS, key_field=KEY_FIELDS[name]
    )
    _check_outcome(model, result)


@FUZZ
@given(
    st.sampled_from(sorted(CONTRACTS)),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=12),
    st.booleans(),
    st.none() | st.text(max_size=20),
)
def test_decode_never_raises_on_json_objects(
    name: str, obj: dict[str, Any], ascii_only: bool, key: str | None
) -> None:
    model = CONTRACTS[name]
    value = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    raw_key = None if key is None else key.encode("utf-8", "surrogatepass")
    result = decode(
        model, value, key=raw_key, max_bytes=65536, limits=LIMITS, key_field=KEY_FIELDS[name]
    )
    _check_outcome(model, result)


GOOD_EVENT = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "ts_ms": 1}


@FUZZ
@given(st.sampled_from([*sorted(GOOD_EVENT), "context", "schema_version"]), json_values)
def test_one_bad_field_of_a_valid_event_is_rejected_not_raised(field: str, bad: Any) -> None:
    obj = {**GOOD_EVENT, field: bad}
    key = str(obj["user_id"]).encode("utf-8", "surrogatepass")
    result = decode(
        UserEvent,
        json.dumps(obj).encode(),
        key=key,
        max_bytes=65536,
        limits=LIMITS,
        key_field="user_id",
    )
    _check_outcome(UserEvent, result)


def _valid_id(text: str) -> bool:
    return 1 <= len(text) <= LIMITS.max_id_length and not any(
        unicodedata.category(ch) in ("Cc", "Cs") for ch in text
    )


ids = (
    st.text(max_size=300)
    | st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
    # ~10 KB ids: a short random text repeated (hypothesis does not draw texts that long).
    | st.tuples(st.text(min_size=1, max_size=16), st.integers(300, 10240)).map(
        lambda t: (t[0] * t[1])[:10240]
    )
)


@FUZZ
@given(st.sampled_from(["event_id", "user_id", "item_id"]), ids)
@example("user_id", "x" * 10240)
@example("event_id", "\x00")
@example("item_id", "shoe\nred")
@example("user_id", "\x7f")
@example("user_id", "\u202e\u0301\U0001f600 \u00e9")
@example("item_id", "\ud800")
def test_ids_with_unicode_control_chars_and_10kb_are_checked(field: str, value: str) -> None:
    obj = {**GOOD_EVENT, field: value}
    # Raw UTF-8 as producers send it; a lone surrogate only fits JSON as a \u escape.
    surrogate = any(unicodedata.category(ch) == "Cs" for ch in value)
    raw = json.dumps(obj, ensure_ascii=surrogate).encode("utf-8")
    result = decode(
        UserEvent,
        raw,
        key=str(obj["user_id"]).encode("utf-8", "surrogatepass"),
        max_bytes=LIMITS.max_event_bytes,
        limits=LIMITS,
        key_field="user_id",
    )
    if _valid_id(value):
        assert isinstance(result, UserEvent), result
        assert getattr(result, field) == value
    else:
        assert isinstance(result, Rejected), value[:40]
        # The size check comes first: an escaped 10 KB id can outgrow the 64 KiB event limit.
        too_big = len(raw) > LIMITS.max_event_bytes
        expected = ErrorCode.PAYLOAD_TOO_LARGE if too_big else ErrorCode.SCHEMA_VIOLATION
        assert result.code == expected, result


# --- models.vision.images.decode_rgb ------------------------------------------------------


def _decode_outcome(data: bytes) -> None:
    try:
        rgb = decode_rgb(data, IMAGE_LIMITS)
    except ImageError as exc:
        assert exc.code in IMAGE_CODES, exc
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert min(rgb.shape[:2]) >= IMAGE_LIMITS.min_side


def _save(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _photo() -> Image.Image:
    return Image.fromarray(sample_arrays()["coffee"]).resize((96, 64))


def _real_files() -> dict[str, bytes]:
    photo = _photo()
    return {
        "jpeg": _save(photo, "JPEG", quality=85),
        "jpeg-progressive": _save(photo, "JPEG", quality=85, progressive=True),
        "jpeg-cmyk": _save(photo.convert("CMYK"), "JPEG"),
        "png": _save(photo, "PNG"),
        "png-16bit": _save(photo.convert("L").convert("I;16"), "PNG"),
        "png-palette-transparent": _save(photo.quantize(16), "PNG", transparency=0),
        "gif": _save(photo.quantize(64), "GIF"),
        "webp": _save(photo, "WEBP", quality=80),
        "webp-lossless": _save(photo, "WEBP", lossless=True),
        "bmp": _save(photo, "BMP"),
    }


REAL_FILES = _real_files()
MAGIC = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"RIFF\0\0\0\0WEBP"]


@FUZZ
@given(st.sampled_from([b"", *MAGIC]), st.binary(max_size=4096))
def test_decode_rgb_raises_only_image_error_on_arbitrary_bytes(magic: bytes, body: bytes) -> None:
    _decode_outcome(magic + body)


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, where, arg in ops:
        i = where % max(1, len(out))
        if op == "truncate":
            del out[i:]
        elif op == "flip":
            if out:
                out[i] ^= arg % 255 + 1
        elif op == "insert":
            out[i:i] = bytes([arg % 256]) * (arg % 64 + 1)
        else:
            del out[i : i + arg % 64 + 1]
    return bytes(out)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["truncate", "flip", "flip", "flip", "insert", "delete"]),
        st.integers(0, 2**20),
        st.integers(0, 2**16),
    ),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(st.sampled_from(sorted(REAL_FILES)), mutations)
def test_decode_rgb_raises_only_image_error_on_mutated_real_files(
    name: str, ops: list[tuple[str, int, int]]
) -> None:
    _decode_outcome(_mutate(REAL_FILES[name], ops))


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_every_real_file_decodes_before_mutation(name: str) -> None:
    assert decode_rgb(REAL_FILES[name], IMAGE_LIMITS).shape == (64, 96, 3)


def animated_gif(frames: int, side: int = 16) -> bytes:
    """A GIF of ``frames`` frames, built by repeating one encoded frame (no re-encoding)."""
    one = _save(Image.new("P", (side, side), 1), "GIF")
    gct = 3 * 2 ** ((one[10] & 7) + 1) if one[10] & 0x80 else 0
    pos = 13 + gct
    while one[pos] == 0x21:  # skip extensions: label, then sub-blocks up to a 0 length
        pos += 2
        while one[pos]:
            pos += one[pos] + 1
        pos += 1
    assert one[pos] == 0x2C, "image descriptor expected"
    frame = one[pos:-1]  # through the image data's terminator, without the trailer
    control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # 10 ms delay, no disposal
    return b"GIF89a" + one[6 : 13 + gct] + (control + frame) * frames + b";"


def _exif_jpeg(size: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010E] = "x" * size  # ImageDescription, ASCII
    return _save(_photo(), "JPEG", exif=exif.tobytes())


def _bmp_header_bomb() -> bytes:
    pixels = b"\0" * 1024
    info = struct.pack("<IiiHHIIiiII", 40, 50_000, 50_000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = struct.pack("<2sIHHI", b"BM", 14 + 40 + len(pixels), 0, 0, 54)
    return head + info + pixels


def _gif_header_bomb(screen: int, frame: int) -> bytes:
    """A one-frame GIF whose screen and first frame claim the given sides."""
    data = bytearray(animated_gif(1))
    data[6:10] = struct.pack("<HH", screen, screen)
    pos = data.index(b"\x21\xf9") + 8  # the image descriptor follows the graphic control
    assert data[pos] == 0x2C
    data[pos + 5 : pos + 9] = struct.pack("<HH", frame, frame)
    return bytes(data)


HOSTILE: dict[str, tuple[Callable[[], bytes], Callable[[Any], None]]] = {
    "cmyk-jpeg": (lambda: REAL_FILES["jpeg-cmyk"], lambda r: r.shape == (64, 96, 3)),
    "16-bit-png": (lambda: REAL_FILES["png-16bit"], lambda r: r.shape == (64, 96, 3)),
    "palette-png": (lambda: REAL_FILES["png-palette-transparent"], lambda r: r.shape[2] == 3),
    "gif-10k-frames": (lambda: animated_gif(10_000), lambda r: r.shape == (16, 16, 3)),
    # Orientation 6 (rotate 90) read from the big EXIF block: the picture comes out upright.
    "jpeg-60kb-exif": (lambda: _exif_jpeg(60_000, 6), lambda r: r.shape == (96, 64, 3)),
    "jpeg-60kb-garbage-exif": (
        lambda: _save(_photo(), "JPEG", exif=b"Exif\0\0" + bytes(range(256)) * 234),
        lambda r: r.shape == (64, 96, 3),
    ),
    "bmp-header-bomb": (_bmp_header_bomb, lambda code: code == "image_too_many_pixels"),
    "gif-header-bomb": (
        lambda: _gif_header_bomb(65535, 65535),
        lambda code: code == "image_too_many_pixels",
    ),
    # A frame far larger than its screen: Pillow's own bomb check fires while parsing.
    "gif-frame-bomb": (
        lambda: _gif_header_bomb(16, 40_000),
        lambda code: code == "image_too_many_pixels",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_images(name: str) -> None:
    build, check = HOSTILE[name]
    data = build()
    started = time.perf_counter()
    try:
        outcome: Any = decode_rgb(data, ImageLimits(20 * 1024 * 1024, 40_000_000, 16))
    except ImageError as exc:
        outcome = exc.code
    elapsed = time.perf_counter() - started
    assert check(outcome), (name, getattr(outcome, "shape", outcome))
    assert elapsed < 2.0, f"{name} took {elapsed:.2f}s"  # bombs are refused from the header


def test_the_10k_frame_gif_really_has_10k_frames() -> None:
    with GifImagePlugin.GifImageFile(io.BytesIO(animated_gif(10_000))) as im:
        assert im.n_frames == 10_000


def test_the_60kb_exif_is_really_there() -> None:
    with Image.open(io.BytesIO(_exif_jpeg(60_000, 6))) as im:
        assert len(im.info["exif"]) > 60_000 and im.getexif()[0x0112] == 6


# --- models.interest.apply_events ------------------------------------------------------------

TYPES = list(EventType)
positive = st.floats(min_value=5e-324, max_value=MAX_EVENT_WEIGHT, allow_nan=False)
params_st = st.builds(
    InterestParams,
    half_life_long_s=st.floats(1e-3, 1e12),
    half_life_short_s=st.floats(1e-3, 1e12),
    short_term_weight=st.floats(0.0, 1.0),
    event_weights=st.fixed_dictionaries({t.value: positive for t in TYPES}),
    half_life_popularity_s=st.floats(1e-3, 1e12),
)
logs = st.lists(
    st.tuples(st.integers(0, 9), st.integers(0, MAX_TS_MS), st.sampled_from(TYPES)),
    min_size=1,
    max_size=40,
)


def _events(rows: list[tuple[int, int, EventType]]) -> list[UserEvent]:
    return [
        UserEvent(event_id=f"e{k}", user_id="u", item_id=f"i{item}", type=kind, ts_ms=ts)
        for k, (item, ts, kind) in enumerate(rows)
    ]


def _close(a: float, b: float) -> bool:
    # Log weights reach ~1e8 for far-future timestamps with short half-lives; there a double
    # carries ~1e-8 absolute, so "within 1e-9" is relative to the magnitude.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@FUZZ
@given(logs, params_st, st.randoms(use_true_random=False))
def test_apply_events_is_idempotent(rows: list[Any], params: InterestParams, rnd: Any) -> None:
    events = _events(rows)
    once = apply_events(UserInterest.empty(), events, params, max_items=5)
    # Redeliveries anywhere after the original: the whole log again, and random repeats.
    repeats = [events[rnd.randrange(len(events))] for _ in range(len(events))]
    noisy = events + events + repeats
    assert apply_events(UserInterest.empty(), noisy, params, max_items=5) == once


@FUZZ
@given(logs, params_st, st.randoms(use_true_random=False))
def test_apply_events_is_order_independent(
    rows: list[Any], params: InterestParams, rnd: Any
) -> None:
    events = _events(rows)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    # No trimming (10 distinct items at most): which items a trim drops depends on order.
    a = apply_events(UserInterest.empty(), events, params, max_items=10)
    b = apply_events(UserInterest.empty(), shuffled, params, max_items=10)
    assert [w.item_id for w in a.weights] == [w.item_id for w in b.weights]
    assert (a.last_ts_ms, a.n_events) == (b.last_ts_ms, b.n_events)
    for x, y in zip(a.weights, b.weights, strict=True):
        assert _close(x.log_long, y.log_long) and _close(x.log_short, y.log_short), (x, y)
        assert x.last_ts_ms == y.last_ts_ms


@FUZZ
@given(logs, params_st, st.integers(0, MAX_TS_MS), st.integers(1, 10))
def test_state_and_vector_are_finite_for_any_times_and_weights(
    rows: list[Any], params: InterestParams, now: int, max_items: int
) -> None:
    state = apply_events(UserInterest.empty(), _events(rows), params, max_items=max_items)
    assert 1 <= len(state.weights) <= max_items
    for w in state.weights:
        assert math.isfinite(w.log_long) and math.isfinite(w.log_short)
    rng = np.random.default_rng(0)
    vectors = {f"i{k}": rng.standard_normal(8) for k in range(10)}
    u = user_vector(state, vectors, now, params)
    assert u is not None and np.all(np.isfinite(u))
    assert abs(float(np.linalg.norm(u)) - 1.0) < 1e-9


@FUZZ
@given(
    st.sampled_from(TYPES),
    st.integers(0, MAX_TS_MS),
    st.integers(0, MAX_TS_MS),
    st.floats(min_value=1e-30, max_value=MAX_EVENT_WEIGHT),
    st.floats(1.0, 1e12),
)
def test_popularity_increments_and_reads_are_finite(
    kind: EventType, ts: int, now: int, weight: float, half_life: float
) -> None:
    base = InterestSettings().interest_params()
    params = InterestParams(
        half_life_long_s=base.half_life_long_s,
        half_life_short_s=base.half_life_short_s,
        short_term_weight=base.short_term_weight,
        event_weights={t.value: weight for t in TYPES},
        half_life_popularity_s=half_life,
    )
    inc = score_increment(kind, ts, params)
    assert math.isfinite(inc) and inc >= 0
    # A million such increments on one item still sum finitely (ZINCRBY never stores inf).
    assert math.isfinite(inc * 1e6)
    read = decay_score(inc * 1e6, now, params)
    assert math.isfinite(read) and read >= 0
