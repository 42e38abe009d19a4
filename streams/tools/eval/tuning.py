"""Coordinate search over ranking knobs: what the validation tuning scripts share.

One knob at a time, in the order given, each value tried with the best values found so far for
the others; the knob keeps its best value (by ``score``, larger is better) before the next is
tried. A setting already tried is not run again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.settings import Settings

Knobs = Sequence[tuple[str, Sequence[float]]]
Trial = dict[str, Any]


def coordinate_search(
    knobs: Knobs,
    start: dict[str, float],
    run: Callable[[dict[str, float]], Trial],
    score: Callable[[Trial], tuple[float, ...]],
    chose: Callable[[str, float, Trial], None] | None = None,
) -> tuple[dict[str, float], list[Trial]]:
    """The chosen value of every knob and every trial run, in order.

    ``run(params)`` plays one trial (``params`` holds every knob's value) and returns its
    record; ``score(record)`` orders records (e.g. ``(hr, ndcg)``: ties broken by the second);
    ``chose(knob, value, record)`` hears each choice.
    """
    best = dict(start)
    done: dict[tuple[tuple[str, float], ...], Trial] = {}
    trials: list[Trial] = []

    def once(params: dict[str, float]) -> Trial:
        key = tuple(sorted(params.items()))
        if key not in done:
            done[key] = run(params)
            trials.append(done[key])
        return done[key]

    for name, values in knobs:
        scored = [(once({**best, name: v}), v) for v in values]
        top, value = max(scored, key=lambda rv: score(rv[0]))
        best[name] = value
        if chose is not None:
            chose(name, value, top)
    return best, trials


def with_interest(settings: Settings, params: dict[str, float]) -> Settings:
    """``settings`` with ``params`` over its interest settings (integer knobs stay integers)."""
    typed = {k: type(getattr(settings.interest, k))(v) for k, v in params.items()}
    return settings.model_copy(update={"interest": settings.interest.model_copy(update=typed)})


def search_interest(
    settings: Settings,
    knobs: Knobs,
    only: Collection[str] | None,
    run: Callable[[dict[str, float]], Trial],
    score: Callable[[Trial], tuple[float, ...]],
    chose: Callable[[str, float, Trial], None] | None = None,
) -> tuple[dict[str, float], list[Trial]]:
    """``coordinate_search`` over the interest ``knobs`` (those in ``only``, if given).

    The search starts from ``settings``' current values of those knobs.
    """
    picked = [(name, values) for name, values in knobs if only is None or name in only]
    start = {name: float(getattr(settings.interest, name)) for name, _ in picked}
    return coordinate_search(picked, start, run, score, chose)
