"""The conversion factor of ``visrec signals rescale`` (pure arithmetic, no Redis)."""

from __future__ import annotations

import math

import pytest

from models.interest import MAX_SCORE_EXPONENT, T0_MS, decay_score, score_increment
from streams.ops.rescale import HalfLives, rescale_factor
from streams.settings import InterestSettings

DAY_S = 86400.0
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(("old", "new"), [(7.0, 90.0), (90.0, 7.0), (7.0, 1.0), (30.0, 365.0)])
def test_a_rescaled_score_keeps_its_decayed_count_at_the_moment_of_the_change(
    old: float, new: float
) -> None:
    p_old = InterestSettings(half_life_popularity_s=old * DAY_S).interest_params()
    p_new = InterestSettings(half_life_popularity_s=new * DAY_S).interest_params()
    # Three clicks, 40, 5 and 0 days before the change.
    score = sum(score_increment("click", NOW - d * 86_400_000, p_old) for d in (40, 5, 0))
    factor = rescale_factor(NOW, old * DAY_S, new * DAY_S)
    before = decay_score(score, NOW, p_old)
    assert decay_score(score * factor, NOW, p_new) == pytest.approx(before, rel=1e-12)
    # From then on it decays with the new half-life, and new clicks add on its scale.
    later = NOW + 10 * 86_400_000
    rescaled = score * factor + score_increment("click", later, p_new)
    want = before * 2 ** (-10 / new) + 1.0
    assert decay_score(rescaled, later, p_new) == pytest.approx(want, rel=1e-12)


def test_no_change_is_a_factor_of_one_and_the_exponent_cap_holds() -> None:
    assert rescale_factor(NOW, 7 * DAY_S, 7 * DAY_S) == 1.0
    # Past the cap (both exponents capped): nothing to convert.
    far = T0_MS + int(2 * MAX_SCORE_EXPONENT * 3600 * 1000)
    assert rescale_factor(far, 3600.0, 1800.0) == 1.0
    assert math.isfinite(rescale_factor(NOW, 60.0, 365 * DAY_S))


def test_half_lives_must_be_usable() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            HalfLives(bad, DAY_S)
    assert HalfLives(7 * DAY_S, 0.1).fields() == {"popularity": "604800.0", "co": "0.1"}
