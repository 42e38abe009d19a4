"""The coordinate search the validation tuning scripts share."""

from __future__ import annotations

from streams.tools.eval.tuning import Trial, coordinate_search


def test_coordinate_search_keeps_each_knobs_best_and_never_reruns_a_setting() -> None:
    # Score peaks at a=2, b=0.5; ties on the first score go to the second.
    def run(params: dict[str, float]) -> Trial:
        calls.append(dict(params))
        a, b = params["a"], params["b"]
        return {"params": dict(params), "hr": -abs(a - 2) - abs(b - 0.5), "ndcg": b}

    calls: list[dict[str, float]] = []
    chosen: list[tuple[str, float]] = []
    best, trials = coordinate_search(
        [("a", (1.0, 2.0, 3.0)), ("b", (0.0, 0.5, 1.0))],
        {"a": 1.0, "b": 1.0},
        run,
        lambda r: (r["hr"], r["ndcg"]),
        lambda name, value, _r: chosen.append((name, value)),
    )
    assert best == {"a": 2.0, "b": 0.5}
    assert chosen == [("a", 2.0), ("b", 0.5)]
    # a=2, b=1 is tried while searching a and is not run again while searching b.
    assert calls == [
        {"a": 1.0, "b": 1.0},
        {"a": 2.0, "b": 1.0},
        {"a": 3.0, "b": 1.0},
        {"a": 2.0, "b": 0.0},
        {"a": 2.0, "b": 0.5},
    ]
    assert [t["params"] for t in trials] == calls


def test_ties_go_to_the_second_score_then_to_the_first_value() -> None:
    best, _ = coordinate_search(
        [("w", (0.1, 0.2, 0.3))],
        {"w": 0.1},
        lambda p: {"hr": 1.0, "ndcg": 1.0 if p["w"] >= 0.2 else 0.0},
        lambda r: (r["hr"], r["ndcg"]),
    )
    assert best == {"w": 0.2}


def test_interest_search_starts_from_the_settings_and_keeps_integer_knobs_integers() -> None:
    from streams.settings import Settings
    from streams.tools.eval.tuning import search_interest, with_interest

    settings = Settings().model_copy(
        update={"interest": Settings().interest.model_copy(update={"co_weight": 0.6})}
    )
    tuned = with_interest(settings, {"recent_items": 5.0, "recent_weight": 0.2})
    assert tuned.interest.recent_items == 5 and isinstance(tuned.interest.recent_items, int)
    assert tuned.interest.recent_weight == 0.2 and tuned.interest.co_weight == 0.6
    assert settings.interest.recent_items == 3  # the original is untouched

    seen: list[dict[str, float]] = []

    def run(params: dict[str, float]) -> Trial:
        seen.append(dict(params))
        return {"hr": params["co_weight"]}

    knobs = [("co_weight", (0.3, 1.0)), ("recent_items", (2.0, 3.0))]
    best, _ = search_interest(settings, knobs, {"co_weight"}, run, lambda r: (r["hr"],))
    assert best == {"co_weight": 1.0}
    assert seen == [{"co_weight": 0.3}, {"co_weight": 1.0}]
