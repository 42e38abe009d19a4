from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from models.offline.baselines import DecayedPopular, MostPopular
from models.offline.cf import Interactions
from models.offline.metrics import PrequentialScores, nearest_neighbours
from schemas import EventType, Recommendations
from streams.exceptions import DatasetError
from streams.settings import Settings
from streams.tools.eval import movielens
from streams.tools.eval.embeddings import (
    augment_digit,
    fashion_set,
    gray_png,
    photo_set,
    raw_pixels,
    read_idx,
)
from streams.tools.eval.hybrid import genre_vectors
from streams.tools.eval.pipeline import Pacing, _Replayer
from streams.tools.eval.prequential import (
    COLD_TRIGGER,
    AskedAtEvent,
    LogEvent,
    MethodResult,
    ReceivedList,
    evaluate_baselines,
    paired_ratio,
    refresh_latencies,
    score_as_received,
    score_received,
)
from streams.tools.eval.replay import ReplayConfig, plan

INTER = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "1\t10\t5\t300",
    "2\t20\t3\t100",
    "1\t30\t4\t100",
    "3\t10\t1\t200",
]
ITEMS = [
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
    "10\tToy Story\t1995\tAnimation Children's Comedy",
    "20\tGoldenEye\t1995\tAction Adventure Thriller",
]


def test_ratings_are_sorted_by_time_then_file_order() -> None:
    ratings = movielens.parse_ratings(INTER)
    assert [(r.user_id, r.item_id, r.ts_s) for r in ratings] == [
        ("2", "20", 100),
        ("1", "30", 100),
        ("3", "10", 200),
        ("1", "10", 300),
    ]
    assert [r.row for r in ratings] == [2, 3, 4, 1]
    # >= 4 is a strong (click) signal, below is a view.
    assert [r.event_type for r in ratings] == [
        EventType.VIEW,
        EventType.CLICK,
        EventType.VIEW,
        EventType.CLICK,
    ]


def test_bad_files_are_reported() -> None:
    with pytest.raises(DatasetError, match="header"):
        movielens.parse_ratings(["a\tb", "1\t2"])
    with pytest.raises(DatasetError, match="line 2"):
        movielens.parse_ratings([INTER[0], "1\t10\tfive\t300"])
    with pytest.raises(DatasetError):
        movielens.locate(Path("/nonexistent"))


def test_movies_split_and_events(tmp_path: Path) -> None:
    (tmp_path / movielens.INTER_FILE).write_text("\n".join(INTER) + "\n")
    (tmp_path / movielens.ITEM_FILE).write_text("\n".join(ITEMS) + "\n")
    data = movielens.load(tmp_path)
    assert data.movies["10"].category == "Animation"
    assert data.movies["30"].title == "30"  # rated but missing from the item file
    train, test = data.split(0.5)
    assert len(train) == 2 and len(test) == 2
    assert max(r.ts_s for r in train) <= min(r.ts_s for r in test)
    event = movielens.to_event(train[0], shift_ms=7)
    assert event.event_id == "ml100k-2"
    assert event.ts_ms == 100_007
    assert event.type == EventType.VIEW
    with pytest.raises(ValueError, match="train_fraction"):
        data.split(1.0)


def ev(seq: int, user: str, item: str, test: bool = True) -> LogEvent:
    return LogEvent(seq, f"e{seq}", user, item, "click", 1.0, 1000 * seq, test)


EVENTS = [ev(0, "a", "x", test=False), ev(1, "a", "y"), ev(2, "b", "x"), ev(3, "a", "z")]


def test_received_lists_are_matched_to_the_event_they_preceded() -> None:
    sent = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    lists = {
        "a": [
            ReceivedList(0, 0.5, ("y", "q")),  # answers e0, arrived before e1 was sent
            ReceivedList(1, 3.5, ("z",)),  # answers e1 but arrived after e3 was sent
        ]
    }
    result = score_received("sys", EVENTS, sent, lists, ks=(1, 2))
    # e1: the list after e0 holds y at rank 1; b never had a list; e3: the list after e1
    # arrived too late, so the user still saw the list after e0 (no z in it).
    assert result.ranks == [1, None, None]
    assert result.no_list == 1
    assert result.fresh == 1  # e1's list answered e0, its predecessor; e3's did not
    assert result.scores.hit_rate(1) == pytest.approx(0.25)  # a: 1 of 2, b: 0 of 1
    only_a = result.summary({"a"}, 1)
    assert (only_a["hr_user"], only_a["ndcg_user"], only_a["events"]) == (
        pytest.approx(0.5),
        pytest.approx(0.5),
        2,
    )
    only_b = result.summary({"b"}, 1)
    assert (only_b["hr_user"], only_b["ndcg_user"], only_b["events"]) == (0.0, 0.0, 1)
    assert result.summary(set(), 1)["events"] == 0
    latencies = refresh_latencies(EVENTS, sent, lists)
    assert latencies == pytest.approx([0.5, 2.5])  # e0 -> 0.5 s; e1 -> 3.5 s; b, e3: none


def test_a_cold_list_read_before_a_first_event_is_scored_as_the_cold_list() -> None:
    sent = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    lists = {
        "a": [ReceivedList(0, 0.5, ("y",))],
        "b": [ReceivedList(COLD_TRIGGER, 1.9, ("q", "x"))],  # read just before e2 was sent
    }
    result = score_received("sys", EVENTS, sent, lists, ks=(1, 2))
    assert result.ranks == [1, 2, None]
    assert (result.no_list, result.cold, result.fresh) == (0, 1, 1)
    assert refresh_latencies(EVENTS, sent, lists) == pytest.approx([0.5])  # it answers nothing


def test_a_list_ranked_again_while_the_user_was_idle_is_the_one_shown() -> None:
    sent = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    lists = {
        "a": [
            ReceivedList(0, 0.2, ("q",)),  # answers e0
            ReceivedList(0, 0.8, ("y",)),  # e0 again, ranked later while a was idle
            ReceivedList(1, 1.5, ("w",)),
            ReceivedList(1, 3.5, ("z",)),  # ranked again, but only after e3 was sent
        ]
    }
    result = score_received("sys", EVENTS, sent, lists, ks=(1,))
    assert result.ranks == [1, None, None]  # e1 sees "y"; e3 sees "w"
    assert (result.fresh, result.reranked) == (2, 1)


def test_a_list_triggered_by_a_later_event_is_not_shown_before_it() -> None:
    sent = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    lists = {"a": [ReceivedList(3, 0.9, ("y",))]}  # impossible order, must be ignored
    result = score_received("sys", EVENTS, sent, lists, ks=(1,))
    assert result.ranks[0] is None
    assert result.no_list == 3  # a list answering e3 cannot have been shown before e3


def test_baselines_see_each_test_event_after_scoring_it() -> None:
    train = Interactions.from_triples([("t", "x", 1.0), ("t", "y", 1.0), ("s", "y", 1.0)])
    results = evaluate_baselines([MostPopular(train)], EVENTS, {"a": {"x"}}, ks=(1, 2))
    (pop,) = results
    # e1 (a, y): y is the most popular unseen item for a -> rank 1.
    # e2 (b, x): popularity y=3 (train 2 + e1), x=1 -> x at rank 2.
    # e3 (a, z): z was never seen in training -> absent.
    assert pop.ranks == [1, 2, None]
    assert pop.fresh == 3


def popularity_race() -> tuple[list[LogEvent], Interactions, list[tuple[str, float, int]]]:
    """Events, train and history where popularity's order changes twice.

    t's training clicks make r overtake q after a's last training event (e1); c's test clicks
    make s overtake r after a's first test event (e4).
    """
    log = [("t", "q", False), ("a", "p", False), ("t", "r", False), ("t", "r", False)]
    log += [("a", "q", True), ("c", "s", True), ("c", "s", True), ("c", "s", True)]
    log += [("a", "s", True)]
    events = [ev(n, u, i, test) for n, (u, i, test) in enumerate(log)]
    train = Interactions.from_triples([(u, i, 1.0) for u, i, _ in log[:4]] + [("c", "s", 1.0)])
    history = [(e.item_id, 1.0, e.ts_ms) for e in events if not e.test]
    return events, train, history


def test_baselines_get_the_information_the_systems_list_had() -> None:
    events, train, history = popularity_race()

    def ranks(rec: DecayedPopular | AskedAtEvent) -> list[int | None]:
        seen = {"a": {"p"}, "t": {"q", "r"}}
        return evaluate_baselines([rec], events, seen, ks=(1, 5))[0].ranks

    # e4: as of e1 only q was clicked; e5 (c's first event, no earlier list): s is last;
    # e6, e7: s seen; e8: the list after e4, before c's clicks: r, s.
    assert ranks(DecayedPopular(train, history, 1e9)) == [1, 4, None, None, 2]
    # Asked at the event, the baseline sees what came after the user's previous event.
    at_event = AskedAtEvent(DecayedPopular(train, history, 1e9), "pop now")
    assert ranks(at_event) == [2, 4, None, None, 1]


def test_popularity_asked_when_the_shown_list_arrived() -> None:
    events, train, history = popularity_race()
    seen = {"a": {"p"}, "t": {"q", "r"}}
    sent = {e.seq: float(e.seq) for e in events}  # event n sent at n s, logged at n s
    answers_e1 = ReceivedList(1, 1.5, ("q",))
    answers_e4 = ReceivedList(4, 4.5, ("r",))  # arrived before c's clicks were sent

    def ranks(lists: dict[str, list[ReceivedList]]) -> tuple[list[int | None], int]:
        pop = DecayedPopular(train, history, 1e9, "pop as received")
        result = score_as_received(pop, events, sent, lists, seen, ks=(1, 5))
        return result.ranks, result.fresh

    # Lists ranked at a's previous event: what the baseline kept then (e4: q as of e1; e5,
    # c's first event and no list: asked when it was sent, s last; e8: r before s).
    assert ranks({"a": [answers_e1, answers_e4]}) == ([1, 4, None, None, 2], 2)
    # The list answering e4 ranked again while a was idle, after c's clicks were sent: the
    # baseline is asked then too and sees them (s first); the system's list is that one.
    rerank = ReceivedList(4, 7.5, ("s",))
    lists = {"a": [answers_e1, answers_e4, rerank]}
    assert ranks(lists) == ([1, 4, None, None, 1], 2)
    assert score_received("sys", events, sent, lists, ks=(1,)).reranked == 1
    # It never sees the scored event or anything after it: a list received late (after e8
    # was sent) is not the one shown, and the baseline is asked as of e4's re-rank.
    late = ReceivedList(4, 9.5, ("s",))
    assert ranks({"a": [answers_e1, answers_e4, late]}) == ([1, 4, None, None, 2], 2)


def test_paired_ratio_compares_per_user_hit_rates_on_the_same_events() -> None:
    a = MethodResult("a", PrequentialScores((10,), 10))
    b = MethodResult("b", PrequentialScores((10,), 10))
    # User u: a hits 2 of 2, b 1 of 2; user v: a 1 of 2, b 1 of 2 -> 0.75 against 0.5.
    a.users = b.users = ["u", "u", "v", "v"]
    a.ranks, b.ranks = [1, 3, None, 2], [1, 11, 4, None]
    r = paired_ratio(a, b, None, k=10, boot=200)
    assert r["ratio"] == pytest.approx(1.5) and r["diff"] == pytest.approx(0.25)
    assert r["ratio_lo"] <= r["ratio"] <= r["ratio_hi"] and r["users"] == 2
    assert paired_ratio(a, b, {"v"}, k=10)["ratio"] == pytest.approx(1.0)
    # Draws where b hits nothing (user u alone, here): an infinite ratio, no warning.
    b.ranks = [None, None, 1, None]
    r = paired_ratio(a, b, None, k=10, boot=200)
    assert r["ratio"] == pytest.approx(3.0) and r["ratio_hi"] == math.inf
    assert r["ratio_lo"] <= 3.0
    c = MethodResult("c", PrequentialScores((10,), 10), users=["u"], ranks=[1])
    with pytest.raises(ValueError, match="same events"):
        paired_ratio(a, c, None, k=10)


def test_summary_averages_per_user_and_per_event_with_intervals() -> None:
    result = MethodResult("m", PrequentialScores((10, 20), 10))
    # User a: 3 events, all hits at rank 1; user b: 1 event, a miss.
    result.users, result.ranks = ["a", "a", "a", "b"], [1, 1, 1, None]
    su = result.summary(None, k=10, mrr_k=20, boot=200)
    assert su["users"] == 2 and su["events"] == 4
    assert su["hr_user"] == 0.5 and su["hr_event"] == 0.75  # the two averages differ
    assert su["ndcg_event"] == 0.75 and su["mrr_user"] == 0.5
    for key in ("hr_user", "hr_event", "ndcg_user", "mrr_event"):
        assert su[f"{key}_lo"] <= su[key] <= su[f"{key}_hi"]
    assert su["hr_user_lo"] == 0.0 and su["hr_user_hi"] == 1.0  # two users: wide
    only_a = result.summary({"a"}, k=10)
    assert only_a["hr_user"] == only_a["hr_event"] == 1.0 and only_a["events"] == 3


def test_genre_vectors_are_one_hot_over_all_genres() -> None:
    movies = {
        "1": movielens.Movie("1", "A", "1995", ("Comedy", "Drama")),
        "2": movielens.Movie("2", "B", "1995", ("Drama",)),
        "3": movielens.Movie("3", "C", "1995", ()),
    }
    vectors = genre_vectors(movies)
    assert set(vectors) == {"1", "2"}  # no genre, no content vector
    assert vectors["1"].tolist() == [1.0, 1.0]  # columns: Comedy, Drama
    assert vectors["2"].tolist() == [0.0, 1.0]


def test_augmented_digit_is_a_near_duplicate() -> None:
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    a = augment_digit(digit, np.random.default_rng(0))
    b = augment_digit(digit, np.random.default_rng(0))
    assert a.shape == (28, 28) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # seeded
    assert not np.array_equal(a, digit)
    other = np.zeros((28, 28), dtype=np.uint8)
    other[12:16, 6:22] = 255  # a horizontal bar: a different shape
    pixels = raw_pixels([gray_png(digit), gray_png(other), gray_png(a)])
    assert pixels.shape == (3, 32 * 32)
    assert np.abs(pixels.mean(axis=1)).max() < 1e-3
    assert nearest_neighbours(pixels[2:], pixels[:2]).tolist() == [0]


def test_photo_set_labels_each_variant_with_its_source() -> None:
    photos = photo_set(copies=1, seed=0)
    assert len(photos.queries) == len(photos.originals) == len(photos.labels)
    assert sorted(photos.targets) == list(range(len(photos.originals)))
    assert photos.loo_labels == photos.labels + [photos.labels[t] for t in photos.targets]


class _Recorder:
    """Stands in for the producer: remembers which events went out, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append(json.loads(value)["event_id"])


class _NoColdList:
    """Stands in for the list cache: no worker has written a cold list."""

    def read_cold(self) -> None:
        return None


def _replay_order(events: list[LogEvent], lookahead: int) -> list[int]:
    """Drive the replayer against a slow worker that answers one sent event per step."""
    pacing = Pacing(lookahead=lookahead, progress=False)
    replayer = _Replayer(Settings(), events, pacing, None, _NoColdList())  # type: ignore[arg-type]
    producer = _Recorder()
    answered: set[int] = set()
    for _ in range(10 * len(events)):
        if replayer.finished():
            break
        replayer.admit(time.monotonic())
        replayer.send_ready(producer)  # type: ignore[arg-type]
        waiting = [seq for seq in sorted(replayer.sent) if seq not in answered]
        if waiting:
            ev = events[waiting[0]]
            answered.add(ev.seq)
            recs = Recommendations(
                user_id=ev.user_id,
                items=[],
                model_id="m",
                trigger_event_id=ev.event_id,
                generated_at_ms=0,
            )
            replayer.record(recs, time.monotonic())
    assert replayer.finished()
    return [int(e.removeprefix("e")) for e in producer.sent]


def _looks_ahead(events: list[LogEvent], order: list[int]) -> bool:
    """Whether some event went out while an earlier test event had not."""
    sent: set[int] = set()
    for seq in order:
        if any(e.test and e.seq < seq and e.seq not in sent for e in events):
            return True
        sent.add(seq)
    return False


def test_the_default_replay_never_sends_past_an_unsent_test_event() -> None:
    # Training first, then test events; "a" is busy (every other event), "b" and "c" are not.
    def user(n: int) -> str:
        return "a" if n % 2 else ("b" if n % 4 == 0 else "c")

    events = [
        LogEvent(n, f"e{n}", user(n), f"i{n % 5}", "click", 1.0, 1_000 * n, test=n >= 6)
        for n in range(30)
    ]
    strict = _replay_order(events, lookahead=0)
    assert sorted(strict) == list(range(30))
    assert not _looks_ahead(events, strict)
    # The same log with the old look-ahead sends later events while a test event waits for
    # its user's previous list: those later events could shape the list it is scored on.
    assert _looks_ahead(events, _replay_order(events, lookahead=1000))


def test_fashion_set_reads_idx_files_and_labels_by_class(tmp_path: Path) -> None:
    # Three 28x28 "photos" of classes 0, 9, 6 in the IDX format Debian's package ships.
    pixels = np.arange(3 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(3, 28, 28)
    head = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (3, 28, 28))
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(head + pixels.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([0, 9, 6]))
    assert (read_idx(tmp_path / "t10k-images-idx3-ubyte.gz") == pixels).all()
    images = fashion_set(tmp_path, limit=3, n_queries=1, seed=0)
    assert images.labels == ["t-shirt/top", "ankle boot", "shirt"]
    assert len(images.originals) == 3 and len(images.queries) == 1
    assert images.originals[0][:8] == b"\x89PNG\r\n\x1a\n"
    with gzip.open(tmp_path / "broken.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01")
    with pytest.raises(ValueError, match="dimensions"):
        read_idx(tmp_path / "broken.gz")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_set(tmp_path / "missing", limit=3, n_queries=1, seed=0)


def test_validation_holdout_scores_the_slice_before_test_and_never_sends_test() -> None:
    ratings = tuple(
        movielens.Rating(row=n, user_id=str(n % 7), item_id=str(n % 11), rating=4, ts_s=n)
        for n in range(100)
    )
    movies = {str(i): movielens.Movie(str(i), str(i), "", ()) for i in range(11)}
    data = movielens.MovieLens(ratings, movies)
    weights = {"view": 1.0, "click": 3.0}
    valid = plan(data, ReplayConfig(users=None, holdout="validation"), weights)
    test = plan(data, ReplayConfig(users=None), weights)
    rows = {e.event_id: int(e.event_id.split("-")[1]) for e in valid.events}
    # Validation: rows 0-69 train, 70-79 scored, 80-99 (the test split) absent.
    assert sorted(rows.values()) == list(range(80))
    assert sorted(rows[e.event_id] for e in valid.events if e.test) == list(range(70, 80))
    assert len(valid.train.users) == 70
    # Test: rows 0-79 train, 80-99 scored; the tuning never saw those.
    assert sorted(int(e.event_id.split("-")[1]) for e in test.events if e.test) == list(
        range(80, 100)
    )
    with pytest.raises(ValueError, match="valid_fraction"):
        plan(data, ReplayConfig(users=None, holdout="validation", valid_fraction=0.9), weights)
