"""Prequential scoring: each test event is scored against the list its user had just before it.

Baselines are asked in-process (``evaluate_baselines``); the streaming system's lists come
from the recommendations topic and are matched to events afterwards (``score_received``):
for a test event sent at time ``s``, the user's list is the last one *received* before ``s``
whose trigger is one of the user's earlier events. Both feed the same ``PrequentialScores``.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.offline.baselines import BaselineRecommender
from models.offline.metrics import PrequentialScores


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One replayed event: ``seq`` is its position in the log (time order)."""

    seq: int
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    weight: float
    ts_ms: int
    test: bool


COLD_TRIGGER = -1
"""``ReceivedList.trigger_seq`` of the cold list, read just before a user's first event (what
the read API serves a user with no list of their own): it answers no event."""


@dataclass(frozen=True, slots=True)
class ReceivedList:
    """A list read from the recommendations topic, tied to the log position of its trigger."""

    trigger_seq: int
    received_s: float
    items: tuple[str, ...]


@dataclass
class MethodResult:
    """A method's scores plus, per scored test event, its timestamp and the item's rank."""

    name: str
    scores: PrequentialScores
    ts_ms: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)
    no_list: int = 0
    """Test events for which the method had no list to show (counted as misses)."""
    fresh: int = 0
    """Test events whose list answered the user's immediately preceding event."""
    cold: int = 0
    """Test events scored against the cold list (the user had no list of their own yet)."""
    reranked: int = 0
    """Of ``fresh``, events whose list was ranked again while the user was idle (a later list
    answering the same event: ``interest.stale_after_s``)."""

    def summary(
        self,
        users: Collection[str] | None,
        k: int,
        mrr_k: int = 20,
        boot: int = 1000,
        seed: int = 0,
    ) -> dict[str, float]:
        """HitRate@k, NDCG@k and MRR@mrr_k per user and per event, with 95 % intervals.

        Intervals: bootstrap over users (resampled with replacement, ``boot`` times).
        ``users``: only these users' events (None: all). Keys: ``{metric}_{user|event}`` and
        ``..._lo`` / ``..._hi``; ``users`` and ``events`` counts.
        """
        rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for user, rank in zip(self.users, self.ranks, strict=True):
            if users is None or user in users:
                hit = rank is not None and rank <= k
                rows[user].append(
                    (
                        1.0 if hit else 0.0,
                        1.0 / math.log2(rank + 1) if hit and rank else 0.0,
                        1.0 / rank if rank is not None and rank <= mrr_k else 0.0,
                    )
                )
        out: dict[str, float] = {"users": float(len(rows)), "events": 0.0}
        if not rows:
            return out
        sums = np.array([np.sum(v, axis=0) for v in rows.values()])  # (users, 3)
        counts = np.array([len(v) for v in rows.values()], dtype=np.float64)
        out["events"] = float(counts.sum())
        draws = np.random.default_rng(seed).integers(0, len(counts), size=(boot, len(counts)))
        for col, name in enumerate(("hr", "ndcg", "mrr")):
            per_user = sums[:, col] / counts
            boot_user = per_user[draws].mean(axis=1)
            boot_event = sums[draws, col].sum(axis=1) / counts[draws].sum(axis=1)
            out[f"{name}_user"] = float(per_user.mean())
            out[f"{name}_event"] = float(sums[:, col].sum() / counts.sum())
            for label, values in (("user", boot_user), ("event", boot_event)):
                lo, hi = np.percentile(values, [2.5, 97.5])
                out[f"{name}_{label}_lo"], out[f"{name}_{label}_hi"] = float(lo), float(hi)
        return out

    def add(self, event: LogEvent, ranked: Sequence[str]) -> None:
        """Score ``ranked`` as the list shown just before ``event``."""
        self.ts_ms.append(event.ts_ms)
        self.users.append(event.user_id)
        self.ranks.append(self.scores.add(event.user_id, ranked, event.item_id))


def paired_ratio(
    a: MethodResult,
    b: MethodResult,
    users: Collection[str] | None,
    k: int,
    boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """``a``'s per-user HitRate@k over ``b``'s on the same events, with a paired interval.

    Both methods must have scored the same test events in the same order. Each user's hit rate
    is taken under both methods; the users are resampled together (``boot`` times), so the
    interval of the ratio of the two means reflects the users they share, not two independent
    samples. Keys: ``ratio``, ``ratio_lo``, ``ratio_hi``, ``diff`` (a - b), ``users``.
    """
    if a.users != b.users:
        raise ValueError(f"{a.name} and {b.name} were not scored on the same events")
    hits: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for user, ra, rb in zip(a.users, a.ranks, b.ranks, strict=True):
        if users is None or user in users:
            hits[user].append(
                (float(ra is not None and ra <= k), float(rb is not None and rb <= k))
            )
    if not hits:
        return {"users": 0.0}
    per_user = np.array([np.mean(v, axis=0) for v in hits.values()])  # (users, 2)
    draws = np.random.default_rng(seed).integers(0, len(per_user), size=(boot, len(per_user)))
    means = per_user[draws].mean(axis=1)  # (boot, 2)
    # A draw where b hits nothing: a ratio of inf (1 where neither hits), and then order
    # statistics of the draws rather than interpolation, so an infinite bound stays a bound.
    safe = np.where(means[:, 1] > 0, means[:, 1], 1.0)
    ratios = np.where(means[:, 1] > 0, means[:, 0] / safe, np.where(means[:, 0] > 0, np.inf, 1.0))
    finite = bool(np.isfinite(ratios).all())
    lo, hi = np.quantile(ratios, [0.025, 0.975], method="linear" if finite else "inverted_cdf")
    ma, mb = per_user.mean(axis=0)
    return {
        "ratio": float(ma / mb) if mb > 0 else math.inf,
        "ratio_lo": float(lo),
        "ratio_hi": float(hi),
        "diff": float(ma - mb),
        "users": float(len(per_user)),
    }


def evaluate_baselines(
    recommenders: Sequence[BaselineRecommender],
    events: Sequence[LogEvent],
    train_seen: Mapping[str, set[str]],
    ks: Sequence[int],
    coverage_k: int = 10,
) -> list[MethodResult]:
    """Score each baseline's list for every test event, then let it observe the event.

    The list is the one the baseline had with the information the system's list had: the
    system's list answers the user's previous event, computed from the log up to it. So a
    baseline is asked right after it observed that event when it is a test event; when it is
    a training event, from the log up to it (``recommend_as_of``, which the baselines whose
    lists follow other users' events have; the others' lists depend on the user's own events
    only, unchanged since). A user's first event gets the list at that point (the system has
    none then). A baseline with ``at_scored_time`` is asked just before the event instead: it
    then also sees other users' events since the user's previous one.

    ``train_seen`` holds each user's training items; test events extend it as they pass, so
    no method is credited for re-showing an item the user already took.
    """
    depth = max(ks)
    seen: dict[str, set[str]] = defaultdict(set, {u: set(s) for u, s in train_seen.items()})
    results = [MethodResult(r.name, PrequentialScores(ks, coverage_k)) for r in recommenders]
    before_test: set[int] = set()  # events whose user's next event is a test event
    last: dict[str, int] = {}
    for event in events:
        if event.test and event.user_id in last:
            before_test.add(last[event.user_id])
        last[event.user_id] = event.seq
    kept: list[dict[str, list[str]]] = [{} for _ in recommenders]
    previous: dict[str, LogEvent] = {}
    for event in events:
        prior = previous.get(event.user_id)
        previous[event.user_id] = event
        if not event.test:
            continue
        exclude = seen[event.user_id]
        for rec, result, lists in zip(recommenders, results, kept, strict=True):
            result.add(event, _shown(rec, event, prior, lists, depth, exclude))
            result.fresh += 1
            rec.observe(event.user_id, event.item_id, event.weight, event.ts_ms)
        exclude.add(event.item_id)
        if event.seq in before_test:
            for rec, lists in zip(recommenders, kept, strict=True):
                if not getattr(rec, "at_scored_time", False):
                    lists[event.user_id] = rec.recommend(event.user_id, depth, exclude)
    return results


def _shown(
    rec: BaselineRecommender,
    event: LogEvent,
    prior: LogEvent | None,
    kept: dict[str, list[str]],
    depth: int,
    exclude: Collection[str],
) -> list[str]:
    """The baseline's list before ``event`` (``evaluate_baselines``' protocol)."""
    if prior is None or getattr(rec, "at_scored_time", False):
        return rec.recommend(event.user_id, depth, exclude)
    if prior.test:
        return kept.pop(event.user_id)
    as_of = getattr(rec, "recommend_as_of", None)
    if as_of is None:
        return rec.recommend(event.user_id, depth, exclude)
    ranked: list[str] = as_of(event.user_id, depth, exclude, prior.ts_ms)
    return ranked


@dataclass
class AskedAtEvent:
    """A baseline asked just before each test event (``evaluate_baselines``).

    It then sees the other users' events since the user's previous event, which the system's
    list, computed at that event, cannot: a row for comparison, not a fair baseline.
    """

    inner: BaselineRecommender
    name: str
    at_scored_time: bool = True

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """The inner baseline's list now."""
        return self.inner.recommend(user_id, k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """The inner baseline learns the event."""
        self.inner.observe(user_id, item_id, weight, ts_ms)


class AsOfRecommender(Protocol):
    """A baseline that can be asked as of an earlier log time (``score_as_received``)."""

    name: str

    def recommend_as_of(
        self, user_id: str, k: int, exclude: Collection[str], ts_ms: int
    ) -> list[str]: ...

    def observe(
        self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None
    ) -> None: ...


def score_received(
    name: str,
    events: Sequence[LogEvent],
    sent_s: Mapping[int, float],
    lists: Mapping[str, Sequence[ReceivedList]],
    ks: Sequence[int],
    coverage_k: int = 10,
) -> MethodResult:
    """Score the lists a user had received before each of their test events was sent."""
    result = MethodResult(name, PrequentialScores(ks, coverage_k))
    for event, prior, shown, earlier in _received_before(events, sent_s, lists):
        if shown is None:
            result.no_list += 1
            result.add(event, ())
            continue
        if shown.trigger_seq == prior:
            result.fresh += 1
            result.reranked += any(r.trigger_seq == prior for r in earlier)
        elif shown.trigger_seq == COLD_TRIGGER:
            result.cold += 1
        result.add(event, shown.items)
    return result


def _received_before(
    events: Sequence[LogEvent],
    sent_s: Mapping[int, float],
    lists: Mapping[str, Sequence[ReceivedList]],
) -> Iterator[tuple[LogEvent, int | None, ReceivedList | None, Sequence[ReceivedList]]]:
    """Per test event: its user's previous event, the list shown, and those received before.

    The list shown is ``score_received``'s: the last one received before the event was sent
    that answers an earlier event (None: none).
    """
    by_user: dict[str, list[ReceivedList]] = {
        u: sorted(ls, key=lambda r: r.received_s) for u, ls in lists.items()
    }
    times = {u: [r.received_s for r in ls] for u, ls in by_user.items()}
    previous: dict[str, int] = {}
    for event in events:
        prior = previous.get(event.user_id)
        previous[event.user_id] = event.seq
        if not event.test:
            continue
        user_lists = by_user.get(event.user_id, [])
        cut = bisect.bisect_right(times.get(event.user_id, []), sent_s[event.seq])
        at = next((j for j in reversed(range(cut)) if user_lists[j].trigger_seq < event.seq), None)
        if at is None:
            yield event, prior, None, ()
        else:
            yield event, prior, user_lists[at], user_lists[:at]


def score_as_received(
    rec: AsOfRecommender,
    events: Sequence[LogEvent],
    sent_s: Mapping[int, float],
    lists: Mapping[str, Sequence[ReceivedList]],
    train_seen: Mapping[str, set[str]],
    ks: Sequence[int],
    coverage_k: int = 10,
) -> MethodResult:
    """A baseline asked, for every test event, when the system's shown list arrived.

    The list a test event is scored against (``score_received``) was ranked from what the
    worker had consumed by then: some of the events sent before it arrived. The baseline is
    asked from all of those (by log time, never past the scored event's), so it has at least
    the information the system's list had, whatever ranked that list: the user's previous
    event, an idle re-rank, the cold list. Where the system had no list, it is asked when the
    event was sent. The baseline observes the test events as they pass (its training events
    are its own).
    """
    depth = max(ks)
    order = sorted(sent_s, key=sent_s.__getitem__)
    sent_at = [sent_s[s] for s in order]
    newest = np.maximum.accumulate(np.array(order, dtype=np.int64)) if order else None
    ts_of = {e.seq: e.ts_ms for e in events}
    seen: dict[str, set[str]] = defaultdict(set, {u: set(s) for u, s in train_seen.items()})
    result = MethodResult(rec.name, PrequentialScores(ks, coverage_k))
    for event, prior, shown, _ in _received_before(events, sent_s, lists):
        moment = sent_s[event.seq] if shown is None else shown.received_s
        n = bisect.bisect_right(sent_at, moment)
        as_of = event.ts_ms if newest is None or n == 0 else ts_of[int(newest[n - 1])]
        exclude = seen[event.user_id]
        ranked = rec.recommend_as_of(event.user_id, depth, exclude, min(as_of, event.ts_ms))
        result.add(event, ranked)
        if shown is not None:
            result.fresh += shown.trigger_seq == prior
            result.cold += shown.trigger_seq == COLD_TRIGGER
        rec.observe(event.user_id, event.item_id, event.weight, event.ts_ms)
        exclude.add(event.item_id)
    return result


def refresh_latencies(
    events: Sequence[LogEvent],
    sent_s: Mapping[int, float],
    lists: Mapping[str, Sequence[ReceivedList]],
) -> list[float]:
    """Seconds from sending each event to receiving the first list that reflects it."""
    first_after: dict[str, list[tuple[int, float]]] = {}
    for user, ls in lists.items():
        # For each trigger position, the earliest arrival of a list at or after it.
        rows = sorted((r.trigger_seq, r.received_s) for r in ls)
        best: list[tuple[int, float]] = []
        earliest = float("inf")
        for seq, received in reversed(rows):
            earliest = min(earliest, received)
            best.append((seq, earliest))
        first_after[user] = best[::-1]
    out: list[float] = []
    for event in events:
        found = first_after.get(event.user_id)
        if not found or event.seq not in sent_s:
            continue
        at = bisect.bisect_left(found, (event.seq, float("-inf")))
        if at < len(found):
            out.append(max(0.0, found[at][1] - sent_s[event.seq]))
    return out
