"""Tune on the validation split only: visrec's ranking knobs and decayed most-popular's half-life.

    .venv/bin/python bench/tune_replay.py [--users 300] [--json bench/results/eval/tuning.json]

Validation (``visrec eval replay --holdout validation``): the first 70 % of MovieLens-100k by
time trains (the CF fit, user state, popularity and co-occurrence), the next 10 % is scored
prequentially, and the test 20 % is never sent nor read. Nothing here looks at the test split.

1. **Decayed most-popular's half-life**, in-process on every user's validation events: each
   candidate half-life's per-user HR@10 (NDCG@10 breaks ties). Also, in-process, whether the
   live-profile baselines (item-kNN, MF fold-in) weigh the user's items with visrec's interest
   decay or not at all (``profiles`` in the JSON; the replay serves the better). With
   ``--sequential``, the GRU4Rec baseline's size and schedule (``sequential``; ``SeqParams``'
   defaults hold the choice).
2. **visrec**, through Kafka and the real worker on ``--users`` users (the same users for every
   trial): a coordinate search, one knob at a time in a fixed order, each keeping the best value
   (per-user HR@10, NDCG@10 breaking ties) before the next knob is tried. ``--knob NAME``
   (repeatable) searches only those knobs, ``--skip-popularity`` skips step 1.
   ``--confirm KNOB=VALUE --repeats N`` instead runs the start and the start with that change
   alternately, N times each: how a winner by less than the run-to-run spread is checked.

Every trial is printed as it finishes (per-user HR@10, which the search maximises, and per
event: a per-user gain with no per-event gain is a few users with one or two clicks each,
as the re-rank of idle lists showed in stop 18) and written to the JSON with the choice.
The test run then uses the choices (``visrec eval replay --full`` with the chosen settings
in the environment, and ``--baseline-half-life-days``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.offline.baselines import (  # noqa: E402
    DecayedPopular,
    ItemKNN,
    RuleProfile,
    VectorProfile,
)
from models.offline.sequential import GRU4Rec, SeqParams  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tools.eval import movielens  # noqa: E402
from streams.tools.eval.prequential import evaluate_baselines  # noqa: E402
from streams.tools.eval.replay import (  # noqa: E402
    SYSTEM,
    Plan,
    ReplayConfig,
    fit_models,
    plan,
    run_replay,
)
from streams.tools.eval.tuning import search_interest, with_interest  # noqa: E402
from streams.tools.processes import local_services  # noqa: E402

HALF_LIVES_DAYS = (1.0, 3.0, 7.0, 14.0, 30.0, 90.0, 365.0)
KNOBS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("co_weight", (0.0, 0.15, 0.3, 0.6, 1.0)),
    ("popularity_weight", (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)),
    ("popularity_prior", (0.0, 1.0, 2.0, 4.0, 8.0)),
    ("popularity_idle_boost", (0.0, 1.0, 3.0)),
    ("stale_after_s", (0.0, 3600.0, 21600.0, 86400.0, 259200.0)),
    ("stale_active_s", (604800.0, 2592000.0, 31536000.0)),
    ("stale_per_batch", (100.0, 1000.0)),
    ("short_term_weight", (0.25, 0.5, 0.75)),
    ("half_life_short_s", (600.0, 1800.0, 7200.0)),
    ("co_window_s", (1800.0, 21600.0, 86400.0)),
    ("recent_weight", (0.0, 0.2, 0.35, 0.5)),
    ("recent_items", (2.0, 3.0, 5.0)),
    ("co_share_power", (0.0, 0.5, 1.0, 2.0)),
    ("co_pop_power", (0.0, 0.25, 0.5, 0.75)),
    ("co_sum", (0.0, 1.0)),
    ("co_norm", (0.0, 1.0)),
    ("half_life_popularity_s", (86400.0, 259200.0, 604800.0, 1209600.0)),
    ("half_life_long_s", (604800.0, 2592000.0, 7776000.0)),
    ("half_life_co_s", (604800.0, 2592000.0, 7776000.0, 31536000.0)),
    ("co_max_neighbours", (50.0, 100.0, 200.0)),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


VALIDATION = ReplayConfig(users=None, holdout="validation")
"""The in-process baseline steps: every user's validation events."""


def tune_popularity(p: Plan) -> list[dict[str, float]]:
    """Every half-life's validation scores, in-process, all users."""
    pops = [
        DecayedPopular(p.train, p.train_events, days * 86400.0, name=f"{days:g}")
        for days in HALF_LIVES_DAYS
    ]
    trials = []
    for result in evaluate_baselines(pops, p.events, p.train_seen, VALIDATION.ks):
        s = result.summary(None, 10)
        trials.append(
            {
                "half_life_days": float(result.name),
                "hr10_user": s["hr_user"],
                "ndcg10_user": s["ndcg_user"],
            }
        )
        log(
            f"decayed most-popular, half-life {result.name} days: "
            f"HR@10 {s['hr_user']:.4f}, NDCG@10 {s['ndcg_user']:.4f}"
        )
    return trials


def tune_profiles(settings: Settings, p: Plan) -> list[dict[str, Any]]:
    """Live-profile baselines with and without visrec's decay, in-process, all users."""
    vectors = fit_models(p, VALIDATION)[0][VALIDATION.cf.algorithm].item_vectors()
    history = p.history
    rule = settings.interest.interest_params()
    no_decay = VectorProfile(p.train, vectors, "MF fold-in, no decay")
    for user_id, item_id, weight, ts_ms in history:
        no_decay.observe(user_id, item_id, weight, ts_ms)
    candidates = [
        ItemKNN(p.train, live_profile=True, name="item-kNN live, no decay"),
        ItemKNN(
            p.train,
            live_profile=True,
            name="item-kNN live, visrec decay",
            decay=rule,
            history=history,
        ),
        no_decay,
        RuleProfile(p.train, vectors, rule, "MF fold-in, visrec decay", history),
    ]
    trials = []
    for result in evaluate_baselines(candidates, p.events, p.train_seen, VALIDATION.ks):
        s = result.summary(None, 10)
        trials.append(
            {
                "baseline": result.name,
                "hr10_user": s["hr_user"],
                "ndcg10_user": s["ndcg_user"],
                "hr10_event": s["hr_event"],
            }
        )
        log(f"{result.name}: HR@10 {s['hr_user']:.4f}, NDCG@10 {s['ndcg_user']:.4f}")
    return trials


SEQUENTIAL = ({"epochs": 10}, {"epochs": 20}, {"epochs": 20, "dim": 128}, {"epochs": 40})


def tune_sequential(p: Plan) -> list[dict[str, Any]]:
    """The GRU4Rec baseline's size and schedule, in-process on the validation events."""
    history = p.history
    trials = []
    for change in SEQUENTIAL:
        t0 = time.monotonic()
        model = GRU4Rec(p.train, history, SeqParams(**change), name=json.dumps(change))
        fit_s = time.monotonic() - t0
        s = evaluate_baselines([model], p.events, p.train_seen, VALIDATION.ks)[0].summary(None, 10)
        trials.append(
            {
                "params": change,
                "hr10_user": s["hr_user"],
                "ndcg10_user": s["ndcg_user"],
                "hr10_event": s["hr_event"],
                "fit_s": fit_s,
            }
        )
        log(
            f"GRU4Rec {change}: HR@10 {s['hr_user']:.4f}, NDCG@10 {s['ndcg_user']:.4f} "
            f"(fit {fit_s:.0f} s)"
        )
    return trials


def trial(settings: Settings, params: dict[str, float], users: int, work: Path) -> dict[str, Any]:
    """One validation replay of visrec with ``params`` over the interest defaults."""
    tuned = with_interest(settings, params)
    config = ReplayConfig(
        users=users, holdout="validation", mf_baselines=(), progress=False, seed=0
    )
    t0 = time.monotonic()
    outcome = run_replay(tuned, config, work)
    system = next(m for m in outcome.methods if m.name.startswith(SYSTEM))
    s = system.summary(None, 10)
    returning = returning_clicks(settings, config)
    hits = [
        r is not None and r <= 10 for r, back in zip(system.ranks, returning, strict=True) if back
    ]
    return {
        "params": dict(params),
        "hr10_user": s["hr_user"],
        "ndcg10_user": s["ndcg_user"],
        "hr10_event": s["hr_event"],
        "scored_events": s["events"],
        "hr10_returning": sum(hits) / max(1, len(hits)),
        "returning_events": len(hits),
        "seconds": time.monotonic() - t0,
    }


RETURNING_GAP_MS = 86_400_000


def returning_clicks(settings: Settings, config: ReplayConfig) -> list[bool]:
    """Per scored event, in scoring order: whether its user had been away for over a day.

    These are the clicks an idle user's re-ranked list can answer (``interest.stale_after_s``
    at a day): a change that only touches those lists shows here, diluted in the averages.
    Every trial of a search replays the same events: worked out once per plan.
    """
    weights = {str(k): v for k, v in settings.interest.event_weights.items()}
    key = repr((sorted(weights.items()), config))
    if key not in _RETURNING:
        p = plan(movielens.load(config.dataset_dir), config, weights)
        last: dict[str, int] = {}
        out: list[bool] = []
        for e in p.events:
            if e.test:
                out.append(e.ts_ms - last.get(e.user_id, e.ts_ms) > RETURNING_GAP_MS)
            last[e.user_id] = e.ts_ms
        _RETURNING[key] = out
    return _RETURNING[key]


_RETURNING: dict[str, list[bool]] = {}


def tune_visrec(
    settings: Settings,
    users: int,
    work: Path,
    only: set[str] | None = None,
    knobs: tuple[tuple[str, tuple[float, ...]], ...] = KNOBS,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Coordinate search over ``knobs`` (or those named in ``only``) from the current defaults."""

    def run(params: dict[str, float]) -> dict[str, Any]:
        r = trial(settings, params, users, work)
        log(
            f"visrec {params}: HR@10 {r['hr10_user']:.4f}, "
            f"NDCG@10 {r['ndcg10_user']:.4f}, per event HR@10 {r['hr10_event']:.4f}, "
            f"after a day away {r['hr10_returning']:.4f} of {r['returning_events']} "
            f"({r['seconds']:.0f} s)"
        )
        return r

    return search_interest(
        settings,
        knobs,
        only,
        run,
        lambda r: (r["hr10_user"], r["ndcg10_user"]),
        lambda name, value, r: log(f"chose {name} = {value:g} (HR@10 {r['hr10_user']:.4f})"),
    )


def grids(values: list[str] | None) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """``KNOBS`` with the grids given as ``KNOB=V1,V2,...`` replaced."""
    given = {}
    for v in values or ():
        name, _, listed = v.partition("=")
        if name not in dict(KNOBS):
            raise SystemExit(f"unknown knob {name!r}")
        given[name] = tuple(float(x) for x in listed.split(","))
    return tuple((name, given.get(name, grid)) for name, grid in KNOBS)


def confirm(
    settings: Settings, change: dict[str, float], repeats: int, users: int, work: Path
) -> list[dict[str, Any]]:
    """The start and the start with ``change``, alternately, ``repeats`` times each.

    A search's winner by less than the run-to-run spread is confirmed (or not) this way: the
    two configurations' trials interleave, so a slow moment of the box hits both.
    """
    trials = []
    for k in range(repeats):
        for params in ({}, change):
            r = trial(settings, params, users, work)
            log(
                f"confirm {k + 1}/{repeats} {params or 'start'}: HR@10 {r['hr10_user']:.4f}, "
                f"per event {r['hr10_event']:.4f}"
            )
            trials.append(r)
    return trials


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=300, help="users per visrec validation trial")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/eval/tuning.json")
    ap.add_argument("--skip-visrec", action="store_true", help="only the baseline's half-life")
    ap.add_argument("--skip-popularity", action="store_true", help="only visrec's knobs")
    ap.add_argument("--knob", action="append", help="tune only these of visrec's knobs")
    ap.add_argument(
        "--values",
        action="append",
        metavar="KNOB=V1,V2,...",
        help="try these values of a knob instead of its grid in KNOBS (recorded in the JSON)",
    )
    ap.add_argument("--sequential", action="store_true", help="also the GRU4Rec baseline")
    ap.add_argument(
        "--confirm",
        action="append",
        metavar="KNOB=VALUE",
        help="instead of a search: the start against the start with these, --repeats times",
    )
    ap.add_argument("--repeats", type=int, default=2, help="trials of each with --confirm")
    args = ap.parse_args()
    settings = Settings()
    weights = {str(k): v for k, v in settings.interest.event_weights.items()}
    out: dict[str, Any] = {"split": "validation: train 70 %, scored 10 %, test 20 % unread"}
    if not args.skip_popularity or args.sequential:
        validation = plan(movielens.load(), VALIDATION, weights)
    if not args.skip_popularity:
        pop = tune_popularity(validation)
        choice = max(pop, key=lambda t: (t["hr10_user"], t["ndcg10_user"]))
        out["popularity"] = {"trials": pop, "chosen_half_life_days": choice["half_life_days"]}
        log(f"chose decayed most-popular half-life {choice['half_life_days']:g} days")
        out["profiles"] = {"trials": tune_profiles(settings, validation)}
    if args.sequential:
        out["sequential"] = {"trials": tune_sequential(validation)}
    if args.confirm:
        change = {k: float(v) for k, v in (c.split("=", 1) for c in args.confirm)}
        with local_services(settings, say=log), tempfile.TemporaryDirectory() as tmp:
            runs = confirm(settings, change, args.repeats, args.users, Path(tmp))
        out["confirm"] = {"start": settings.interest.model_dump(mode="json"), "trials": runs}
    elif not args.skip_visrec:
        with local_services(settings, say=log), tempfile.TemporaryDirectory() as tmp:
            only = set(args.knob) if args.knob else None
            best, trials = tune_visrec(settings, args.users, Path(tmp), only, grids(args.values))
        defaults = {name: float(getattr(settings.interest, name)) for name in best}
        out["visrec"] = {
            "users": args.users,
            "grids": {k: list(v) for k, v in grids(args.values) if only is None or k in only},
            "start": settings.interest.model_dump(mode="json"),
            "defaults": defaults,
            "trials": trials,
            "chosen": best,
        }
        log(f"chose for visrec: {best} (defaults: {defaults})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    # Parts this run did not redo (e.g. ``sequential`` without --sequential) stay in the file.
    kept = json.loads(args.json.read_text()) if args.json.exists() else {}
    args.json.write_text(json.dumps({**kept, **out}, indent=2, sort_keys=True) + "\n")
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
