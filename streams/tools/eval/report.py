"""Writing a replay's results: a markdown table, a JSON file and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from streams.tools.eval.prequential import MethodResult, paired_ratio
from streams.tools.eval.replay import ReplayOutcome

HEADLINE_K = 10
RECALL_K = 20


def method_metrics(result: MethodResult, catalogue_size: int) -> dict[str, Any]:
    """Every metric of one method, at every tracked k."""
    s = result.scores
    return {
        "name": result.name,
        "users": s.users,
        "events": s.events,
        "hit_rate": {str(k): s.hit_rate(k) for k in s.ks},
        "ndcg": {str(k): s.ndcg(k) for k in s.ks},
        "recall": {str(k): s.recall(k) for k in s.ks},
        "micro_hit_rate": {str(k): s.micro_hit_rate(k) for k in s.ks},
        f"coverage@{s.coverage_k}": s.coverage(catalogue_size),
        "no_list": result.no_list,
        "cold_list": result.cold,
        "fresh": result.fresh,
        "reranked_while_idle": result.reranked,
    }


def method_summaries(result: MethodResult, outcome: ReplayOutcome) -> dict[str, Any]:
    """Per-user and per-event HR/NDCG/MRR with intervals: all users, known, new."""
    known = set(result.users) - outcome.new_users
    return {
        segment: result.summary(users, HEADLINE_K, RECALL_K)
        for segment, users in (("all", None), ("known", known), ("new", outcome.new_users))
    }


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """Mean and percentiles of event-to-refreshed-list latency, in milliseconds."""
    if not latencies_s:
        return {}
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "count": float(len(ms)),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def _ci(summary: dict[str, float], key: str) -> str:
    return f"{summary[key]:.4f} [{summary[key + '_lo']:.3f}, {summary[key + '_hi']:.3f}]"


def markdown(
    outcome: ReplayOutcome,
    segments: list[str] | None = None,
    paired: list[str] | None = None,
) -> str:
    """Render the results table plus the run's key facts as markdown.

    ``segments`` and ``paired``: ``segment_table`` and ``paired_table`` if already computed.
    """
    k = HEADLINE_K
    lines = [
        f"| method | HitRate@{k} per user | NDCG@{k} per user | MRR@{RECALL_K} per user | "
        f"HitRate@{k} per event | NDCG@{k} per event | coverage@{k} | lists answering "
        "the previous event (ranked again while idle) | cold list / no list yet |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in outcome.methods:
        s = result.scores
        su = result.summary(None, k, RECALL_K)
        lines.append(
            f"| {result.name} | {_ci(su, 'hr_user')} | {_ci(su, 'ndcg_user')} | "
            f"{_ci(su, 'mrr_user')} | {_ci(su, 'hr_event')} | {_ci(su, 'ndcg_event')} | "
            f"{s.coverage(outcome.catalogue_size):.3f} | "
            f"{result.fresh / max(1, s.events):.1%} ({result.reranked / max(1, s.events):.1%}) "
            f"| {result.cold} / {result.no_list} |"
        )
    lines += [
        "",
        "Per user: each user's test events averaged, then the users; per event: all test "
        "events pooled. Brackets: 95 % bootstrap intervals (1,000 resamples of the users). "
        "Each baseline's list for a test event is the one it had right after the user's "
        "previous event, when visrec's list was computed (the row 'asked when visrec's list "
        "arrived': from everything sent before each list visrec showed arrived, also one an "
        "idle re-rank sent; rows "
        "'asked at the event': just before the event, seeing other users' events visrec's "
        "list could not).",
        "",
        *(segment_table(outcome) if segments is None else segments),
        "",
        *(paired_table(outcome) if paired is None else paired),
    ]
    info = outcome.info
    lat = latency_summary(outcome.latencies_s)
    lines += [
        "",
        f"{info['users_replayed']} users, {info['events_replayed']} events replayed "
        f"({info['test_events']} scored test events) in {info['replay_s']:.1f} s "
        f"({info['events_per_s']:.0f} events/s); served model `{info['served_model_id']}` "
        f"({info['published_items']} item vectors); look-ahead "
        f"{info['config']['lookahead'] or 'none'}.",
    ]
    if lat:
        lines.append(
            f"Event produced -> refreshed list received: p50 {lat['p50_ms']:.0f} ms, "
            f"p90 {lat['p90_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
            f"(mean {lat['mean_ms']:.0f} ms, {int(lat['count'])} events)."
        )
    return "\n".join(lines) + "\n"


def segment_table(outcome: ReplayOutcome, k: int = HEADLINE_K) -> list[str]:
    """HitRate@k and NDCG@k for users known from training and for new users, with intervals."""
    known = {u for m in outcome.methods for u in m.users} - outcome.new_users
    rows = [
        f"| method | segment | HitRate@{k} per user | NDCG@{k} per user | "
        f"HitRate@{k} per event | NDCG@{k} per event |",
        "|---|---|---:|---:|---:|---:|",
    ]
    counts = ""
    for m in outcome.methods:
        for label, users in (("known users", known), ("new users", outcome.new_users)):
            su = m.summary(users, k, RECALL_K)
            if not su["events"]:
                continue
            rows.append(
                f"| {m.name} | {label} | {_ci(su, 'hr_user')} | {_ci(su, 'ndcg_user')} | "
                f"{_ci(su, 'hr_event')} | {_ci(su, 'ndcg_event')} |"
            )
        n_k = m.summary(known, k)["events"]
        n_n = m.summary(outcome.new_users, k)["events"]
        counts = (
            f"Known users: {len(known)} users, {n_k:.0f} test events; new users (no training "
            f"events): {len(outcome.new_users)} users, {n_n:.0f} test events."
        )
    return [*rows, "", counts]


def paired_table(outcome: ReplayOutcome, k: int = HEADLINE_K) -> list[str]:
    """The system's HitRate@k per user over each baseline's, with paired 95 % intervals."""
    system, *baselines = outcome.methods
    known = set(system.users) - outcome.new_users
    rows = [
        f"| {system.name} over | all users | known users | new users |",
        "|---|---:|---:|---:|",
    ]
    for b in baselines:
        cells = []
        for users in (None, known, outcome.new_users):
            r = paired_ratio(system, b, users, k)
            ok = r["users"] and math.isfinite(r["ratio"])
            cells.append(
                f"{r['ratio']:.2f}x [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}]" if ok else "-"
            )
        rows.append(f"| {b.name} | {' | '.join(cells)} |")
    return [
        *rows,
        "",
        f"HitRate@{k} per user, the system's over the baseline's; brackets: 95 % intervals of "
        "the ratio, the same users resampled for both (1,000 paired bootstrap resamples).",
    ]


def write_report(outcome: ReplayOutcome, out_dir: Path) -> dict[str, Path]:
    """Write results.md, results.json and the plots into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "results.md",
        "json": out_dir / "results.json",
        "metric_vs_k": out_dir / "metric_vs_k.png",
        "over_time": out_dir / "hit_rate_over_time.png",
        "latency": out_dir / "latency.png",
    }
    # Both tables bootstrap every method: computed once, for the markdown and the JSON.
    segments, paired = segment_table(outcome), paired_table(outcome)
    paths["markdown"].write_text(markdown(outcome, segments, paired))
    payload = {
        "methods": [
            {**method_metrics(m, outcome.catalogue_size), "summary": method_summaries(m, outcome)}
            for m in outcome.methods
        ],
        "latency": latency_summary(outcome.latencies_s),
        "hit_rate_over_time": over_time(outcome.methods),
        "segments": segments,
        "paired": paired,
        "catalogue_size": outcome.catalogue_size,
        "info": outcome.info,
    }
    paths["json"].write_text(json.dumps(payload, indent=2, default=str) + "\n")
    plot_metric_vs_k(outcome.methods, paths["metric_vs_k"])
    plot_over_time(outcome.methods, paths["over_time"])
    plot_latency(outcome.latencies_s, paths["latency"])
    return paths


def over_time(methods: Sequence[MethodResult], k: int = HEADLINE_K) -> dict[str, Any]:
    """HitRate@k over equal-count buckets of the test events (all methods share the events)."""
    if not methods or not methods[0].ts_ms:
        return {"dates": [], "series": {}}
    n = len(methods[0].ts_ms)
    buckets = np.array_split(np.arange(n), max(1, min(20, n // 50)))
    ts = np.asarray(methods[0].ts_ms)
    dates = [
        datetime.fromtimestamp(float(np.median(ts[b])) / 1000.0, tz=UTC).isoformat()
        for b in buckets
    ]
    series = {}
    for m in methods:
        hits = np.array([r is not None and r <= k for r in m.ranks], dtype=np.float64)
        series[m.name] = [float(hits[b].mean()) for b in buckets]
    return {"k": k, "dates": dates, "series": series}


def plot_metric_vs_k(methods: Sequence[MethodResult], path: Path) -> None:
    """HitRate@K and NDCG@K against K, one line per method."""
    fig = Figure(figsize=(11, 4.5))
    ax_hr, ax_ndcg = fig.subplots(1, 2)
    for m in methods:
        ks = list(m.scores.ks)
        ax_hr.plot(ks, [m.scores.hit_rate(k) for k in ks], marker="o", label=m.name)
        ax_ndcg.plot(ks, [m.scores.ndcg(k) for k in ks], marker="o", label=m.name)
    for ax, title in ((ax_hr, "HitRate@K"), (ax_ndcg, "NDCG@K")):
        ax.set_xlabel("K")
        ax.set_title(f"{title} (per-user mean, prequential)")
        ax.grid(alpha=0.3)
    ax_hr.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_over_time(methods: Sequence[MethodResult], path: Path) -> None:
    """HitRate@10 of each method over the test period."""
    data = over_time(methods)
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    when = [datetime.fromisoformat(d) for d in data["dates"]]
    days = [(w - when[0]).total_seconds() / 86400.0 for w in when] if when else []
    for name, values in data["series"].items():
        ax.plot(days, values, marker=".", label=name)
    start = when[0].date().isoformat() if when else "?"
    save_line_plot(
        fig,
        ax,
        path,
        xlabel=f"days after {start} (log time; buckets of equally many test events)",
        ylabel=f"HitRate@{HEADLINE_K} (events in bucket)",
        title="Hit rate over the test period",
    )


def save_line_plot(
    fig: Figure, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str
) -> None:
    """Label ``ax``, add a grid and a legend, lay ``fig`` out and write it to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_latency(latencies_s: Sequence[float], path: Path) -> None:
    """Histogram of event-to-refreshed-list latency (the slowest 0.5 % counted, not drawn)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    title = "Refresh latency"
    if latencies_s:
        ms = np.asarray(latencies_s) * 1000.0
        cap = float(np.percentile(ms, 99.5))
        ax.hist(ms[ms <= cap], bins=60, color="tab:blue")
        title += f" ({int((ms > cap).sum())} events above {cap:.0f} ms not shown)"
    ax.set_xlabel("event produced -> refreshed list received (ms)")
    ax.set_ylabel("events")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
