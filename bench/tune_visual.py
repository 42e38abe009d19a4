"""Tune visrec's shop knobs for the visual benchmark on a validation shop, never the test one.

    .venv/bin/python bench/tune_visual.py [--seed 1] [--json FILE] [--knob NAME ...]

The visual benchmark (``visrec eval visual``) reports on the shop simulated with seed 0. This
script tunes on another shop, simulated with ``--seed`` (default 1): other shoppers, other
tastes, other products in other drops; the same world parameters. Each trial plays that whole
shop through Kafka, the embed worker (EfficientNet-Lite0) and the interest worker, with the
trial's settings over the defaults, and scores HR@10 over every click (NDCG@10 breaks ties).

A coordinate search, one knob at a time in a fixed order from the defaults, each keeping its
best value before the next is tried:

1. ``co_window_s``: how far apart in time two clicks of one shopper may be and still
   co-occur (the shop's click cadence);
2. ``fresh_weight``: the weight of a product's freshness since its arrival;
3. ``co_weight``: the weight of co-occurrence;
4. ``fresh_half_life_s``: how fast freshness fades;
5. ``recent_weight`` and 6. ``recent_items``: the shopper's latest items as separate
   interests (``models/recent.py``).

``--knob NAME`` (repeatable) searches only those knobs, from the current settings (set the
earlier choices with ``VISREC_INTEREST__*`` to continue from them).

Every trial is printed as it finishes and written to the JSON with the choice; the test run
then uses the choice (``visrec eval visual`` with ``VISREC_INTEREST__*`` set to it).
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

from streams.settings import Settings  # noqa: E402
from streams.tools.eval.tuning import search_interest, with_interest  # noqa: E402
from streams.tools.eval.visual_report import VisualConfig, run_visual, summarize  # noqa: E402
from streams.tools.eval.visual_sim import WorldConfig  # noqa: E402
from streams.tools.processes import local_services  # noqa: E402

ENCODER = "efficientnet-lite0"
KNOBS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("co_window_s", (1800.0, 21600.0, 86400.0)),
    ("fresh_weight", (0.0, 0.1, 0.2, 0.4, 0.8)),
    ("co_weight", (0.1, 0.3, 0.6)),
    ("fresh_half_life_s", (21600.0, 86400.0, 259200.0)),
    ("recent_weight", (0.0, 0.2, 0.35, 0.5)),
    ("recent_items", (2.0, 3.0, 5.0)),
    ("co_share_power", (0.0, 0.5, 1.0)),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def trial(settings: Settings, params: dict[str, float], seed: int, work: Path) -> dict[str, Any]:
    """One validation shop played through the pipeline with ``params`` over the defaults."""
    tuned = with_interest(settings, params)
    config = VisualConfig(world=WorldConfig(seed=seed), encoders=(ENCODER,))
    t0 = time.monotonic()
    outcome = run_visual(tuned, config, work)
    s = summarize(outcome)[f"visrec ({ENCODER})"]
    return {
        "params": dict(params),
        "hr10": s["all"]["hr@10"],
        "ndcg10": s["all"]["ndcg@10"],
        "hr10_cold": s["cold"]["hr@10"],
        "hr10_warm": s["warm"]["hr@10"],
        "clicks": s["all"]["clicks"],
        "seconds": time.monotonic() - t0,
    }


def tune(
    settings: Settings, seed: int, work: Path, only: set[str] | None = None
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Coordinate search over ``KNOBS`` (or those named in ``only``) from the current settings."""

    def run(params: dict[str, float]) -> dict[str, Any]:
        r = trial(settings, params, seed, work)
        log(
            f"{params}: HR@10 {r['hr10']:.4f} (cold {r['hr10_cold']:.3f}, warm "
            f"{r['hr10_warm']:.3f}), NDCG@10 {r['ndcg10']:.4f} ({r['seconds']:.0f} s)"
        )
        return r

    return search_interest(
        settings,
        KNOBS,
        only,
        run,
        lambda r: (r["hr10"], r["ndcg10"]),
        lambda name, value, r: log(f"chose {name} = {value:g} (HR@10 {r['hr10']:.4f})"),
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1, help="the validation shop (the test is 0)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/eval/visual_tuning.json")
    ap.add_argument("--knob", action="append", help="tune only these knobs (repeatable)")
    args = ap.parse_args()
    if args.seed == 0:
        ap.error("seed 0 is the test shop")
    settings = Settings()
    with local_services(settings, say=log), tempfile.TemporaryDirectory() as tmp:
        best, trials = tune(settings, args.seed, Path(tmp), set(args.knob or ()) or None)
    out = {
        "validation_seed": args.seed,
        "encoder": ENCODER,
        "objective": "HR@10 over every scored click (NDCG@10 breaks ties)",
        "start": settings.interest.model_dump(mode="json"),
        "trials": trials,
        "chosen": best,
        "env": {f"VISREC_INTEREST__{k.upper()}": f"{v:g}" for k, v in best.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    log(f"chose {best}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
