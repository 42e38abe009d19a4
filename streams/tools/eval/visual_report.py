"""The visual benchmark end to end: simulate, run every encoder, score, report, plot.

Figures are per click (HR@10, NDCG@10 of the clicked product in the list shown just before),
split by what the clicked product was (``visual_sim.segment_of``: cold, warm, old), with 95 %
intervals from a bootstrap over shoppers. Also: how long a new product takes to reach the
list of a shopper who likes its class (simulated hours), and how long the pipeline takes
from a drop handed to Kafka to its products being in the interest worker's index (seconds).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from streams.settings import Settings
from streams.tools.eval.report import save_line_plot
from streams.tools.eval.visual import RAW_PIXELS, Photos, PipelineRun, appearance_stats, run_encoder
from streams.tools.eval.visual_baselines import prequential, standard_baselines
from streams.tools.eval.visual_sim import (
    DAY_MS,
    HOUR_MS,
    Scored,
    World,
    WorldConfig,
    segment_of,
    simulate,
)

SEGMENTS = ("all", "cold", "warm", "old")
AGE_BUCKETS_H = (0, 6, 12, 24, 48, 96, 1e9)


@dataclass(frozen=True)
class VisualConfig:
    """What ``visrec eval visual`` runs."""

    world: WorldConfig = field(default_factory=WorldConfig)
    encoders: tuple[str, ...] = ("efficientnet-lite0", "mobilenet-v2", RAW_PIXELS)
    k: int = 10
    boot: int = 1000


@dataclass
class VisualOutcome:
    """Everything one benchmark run produced."""

    config: VisualConfig
    world: World
    runs: list[PipelineRun]
    baselines: list[Scored]
    segments: dict[int, str]
    info: dict[str, Any]

    def methods(self) -> list[Scored]:
        """Visrec per encoder, then the baselines."""
        return [r.scored for r in self.runs] + self.baselines

    def scored_clicks(self) -> list[int]:
        """Log positions of the scored clicks (every method scores the same ones)."""
        return sorted(self.runs[0].scored.ranks) if self.runs else []


SHOP_KNOBS = {
    "visual_weight",
    "co_weight",
    "popularity_weight",
    "co_window_s",
    "fresh_weight",
    "fresh_half_life_s",
}
"""The interest settings a visual run records (those a shop tunes)."""


def run_visual(
    settings: Settings, config: VisualConfig, workdir: Path, photos: Photos | None = None
) -> VisualOutcome:
    """Simulate the shop, play it through the pipeline once per encoder, score everything."""
    t0 = time.monotonic()
    photos = photos or Photos.load()
    world = simulate(photos.labels.tolist(), config.world, start_ms=1_764_000_000_000)
    workdir.mkdir(parents=True, exist_ok=True)
    runs = [run_encoder(settings, world, photos, e, workdir, config.k) for e in config.encoders]
    half_life = settings.interest.half_life_popularity_s
    baselines, _ = prequential(world, standard_baselines(half_life, config.world.seed), config.k)
    clicks = world.clicks()
    info = {
        "dataset": "Fashion-MNIST test split (Debian dataset-fashion-mnist)",
        "products": len(world.label),
        "clicks": len(clicks),
        "scored_clicks": len(runs[0].scored.ranks) if runs else 0,
        "shoppers": config.world.shoppers,
        "popularity_half_life_s": half_life,
        "interest": settings.interest.model_dump(include=SHOP_KNOBS),
        "world": asdict(config.world),
        "run_s": {r.encoder: r.seconds for r in runs},
        "total_s": time.monotonic() - t0,
    }
    return VisualOutcome(config, world, runs, baselines, segment_of(world, config.world), info)


def _bootstrap(
    scored: Scored, seqs: Sequence[int], user_of: dict[int, str], k: int, boot: int
) -> tuple[float, float]:
    """95 % interval of HR@k over ``seqs``, resampling shoppers with replacement."""
    by_user: dict[str, list[float]] = defaultdict(list)
    for s in seqs:
        r = scored.ranks[s]
        by_user[user_of[s]].append(1.0 if r is not None and r <= k else 0.0)
    if not by_user:
        return 0.0, 0.0
    hits = np.array([sum(v) for v in by_user.values()])
    counts = np.array([len(v) for v in by_user.values()])
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(hits), (boot, len(hits)))
    rates = hits[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))


def summarize(outcome: VisualOutcome) -> dict[str, Any]:
    """Per method and segment: clicks, HR@k with its interval, NDCG@k."""
    k, boot = outcome.config.k, outcome.config.boot
    user_of = {c.seq: c.user_id for c in outcome.world.clicks()}
    scored_seqs = outcome.scored_clicks()
    out: dict[str, Any] = {}
    for m in outcome.methods():
        rows: dict[str, Any] = {}
        for seg in SEGMENTS:
            seqs = [s for s in scored_seqs if seg == "all" or outcome.segments[s] == seg]
            lo, hi = _bootstrap(m, seqs, user_of, k, boot)
            rows[seg] = {
                "clicks": len(seqs),
                f"hr@{k}": m.hit_rate(seqs, k),
                f"hr@{k}_lo": lo,
                f"hr@{k}_hi": hi,
                f"ndcg@{k}": m.ndcg(seqs, k),
            }
        out[m.name] = rows
    return out


def appearance(outcome: VisualOutcome) -> dict[str, Any]:
    """Per encoder: time to first appearance, and the pipeline's drop -> indexed seconds.

    Over the products that arrived after the start (the initial catalogue excluded).
    """
    world, k = outcome.world, outcome.config.k
    start = min(world.arrived_ms.values())
    new = [i for i, t in world.arrived_ms.items() if t > start]
    out: dict[str, Any] = {}
    for run in outcome.runs:
        stats: dict[str, Any] = dict(appearance_stats(world, run.lists, k, new))
        later = run.indexed_s[1:]
        if later:
            stats["drop_indexed_s_p50"] = float(np.percentile(later, 50))
            stats["drop_indexed_s_p99"] = float(np.percentile(later, 99))
        stats["initial_catalogue_indexed_s"] = run.indexed_s[0] if run.indexed_s else None
        out[run.encoder] = stats
    return out


def markdown(summary: dict[str, Any], appear: dict[str, Any], info: dict[str, Any], k: int) -> str:
    """The results table and the appearance figures."""
    cols = " | ".join(f"HR@{k} {s}" for s in SEGMENTS)
    lines = [
        f"Fashion-MNIST shop: {info['products']} products, {info['shoppers']} shoppers, "
        f"{info['scored_clicks']} scored clicks (of {info['clicks']}); per click, 95 % "
        "bootstrap intervals over shoppers. cold = arrived within the last day and never "
        "clicked; warm = clicked before; old = older, never clicked.",
        "",
        f"| method | {cols} | NDCG@{k} all | NDCG@{k} cold | clicks cold / warm / old |",
        "|---|" + "---:|" * (len(SEGMENTS) + 3),
    ]
    for name, rows in summary.items():
        cells = [
            f"{rows[s][f'hr@{k}']:.3f} [{rows[s][f'hr@{k}_lo']:.3f}, {rows[s][f'hr@{k}_hi']:.3f}]"
            for s in SEGMENTS
        ]
        counts = " / ".join(str(rows[s]["clicks"]) for s in ("cold", "warm", "old"))
        lines.append(
            f"| {name} | {' | '.join(cells)} | {rows['all'][f'ndcg@{k}']:.3f} | "
            f"{rows['cold'][f'ndcg@{k}']:.3f} | {counts} |"
        )
    lines += [
        "",
        "| encoder | new products shown to a matching shopper | p50 / p99 simulated "
        "hours to that | drop -> in the worker's index p50 / p99 s |",
        "|---|---:|---:|---:|",
    ]
    for enc, s in appear.items():
        lines.append(
            f"| {enc} | {int(s['appeared'])} of {int(s['products'])} | "
            f"{s.get('hours_p50', float('nan')):.1f} / {s.get('hours_p99', float('nan')):.1f} | "
            f"{s.get('drop_indexed_s_p50', float('nan')):.2f} / "
            f"{s.get('drop_indexed_s_p99', float('nan')):.2f} |"
        )
    return "\n".join(lines) + "\n"


def _age_hours(outcome: VisualOutcome) -> dict[int, float]:
    world = outcome.world
    return {c.seq: (c.ts_ms - world.arrived_ms[c.item_id]) / HOUR_MS for c in world.clicks()}


def plot_hr_vs_age(outcome: VisualOutcome, path: Path) -> None:
    """HR@k by the clicked product's age (hours since it arrived), one line per method."""
    age, k = _age_hours(outcome), outcome.config.k
    seqs = outcome.scored_clicks()
    edges = AGE_BUCKETS_H
    labels = [f"{edges[n]:g}-{edges[n + 1]:g}h" for n in range(len(edges) - 2)] + [
        f">{edges[-2]:g}h"
    ]
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    for m in outcome.methods():
        ys = []
        for n in range(len(edges) - 1):
            bucket = [s for s in seqs if edges[n] <= age[s] < edges[n + 1]]
            ys.append(m.hit_rate(bucket, k))
        ax.plot(labels, ys, marker="o", label=m.name)
    save_line_plot(
        fig,
        ax,
        path,
        xlabel="age of the clicked product when clicked",
        ylabel=f"HR@{k}",
        title="Hit rate by product age (new products need the image)",
    )


def plot_hr_over_time(outcome: VisualOutcome, path: Path) -> None:
    """HR@k per simulated day, one line per method."""
    world, k = outcome.world, outcome.config.k
    seqs = outcome.scored_clicks()
    start = min(world.arrived_ms.values())
    day = {c.seq: (c.ts_ms - start) // DAY_MS for c in world.clicks()}
    days = sorted({day[s] for s in seqs})
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    for m in outcome.methods():
        ax.plot(
            days,
            [m.hit_rate([s for s in seqs if day[s] == d], k) for d in days],
            marker=".",
            label=m.name,
        )
    save_line_plot(
        fig, ax, path, xlabel="simulated day", ylabel=f"HR@{k}", title="Hit rate over time"
    )


def write_visual(outcome: VisualOutcome, out_dir: Path) -> tuple[str, dict[str, Path]]:
    """visual.md, visual.json and the two plots in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, appear = summarize(outcome), appearance(outcome)
    table = markdown(summary, appear, outcome.info, outcome.config.k)
    paths = {
        "markdown": out_dir / "visual.md",
        "json": out_dir / "visual.json",
        "hr_vs_age": out_dir / "visual_hr_vs_age.png",
        "hr_over_time": out_dir / "visual_hr_over_time.png",
    }
    paths["markdown"].write_text(table)
    payload = {"info": outcome.info, "methods": summary, "appearance": appear}
    paths["json"].write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    plot_hr_vs_age(outcome, paths["hr_vs_age"])
    plot_hr_over_time(outcome, paths["hr_over_time"])
    return table, paths
