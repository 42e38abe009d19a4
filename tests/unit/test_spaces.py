from __future__ import annotations

import numpy as np

from models.index import FitParams, fit_space, raw_space
from streams.settings import InterestSettings
from streams.state.spaces import fit_params, refit_due


def test_refit_is_due_when_large_enough_and_then_when_doubled() -> None:
    settings = InterestSettings(space_min_items=1000, space_refit_growth=2.0)
    assert not refit_due(None, 999, settings)
    assert refit_due(None, 1000, settings)
    assert refit_due(raw_space("m", 8), 1000, settings)
    x = np.random.default_rng(0).standard_normal((50, 8))
    space = fit_space("m", x, 1500, FitParams(dims=4, ivf_min_items=10**9))
    assert not refit_due(space, 2999, settings)
    assert refit_due(space, 3000, settings)
    assert not refit_due(None, 10**6, InterestSettings(space_min_items=None))


def test_fit_params_follow_the_settings() -> None:
    settings = InterestSettings(space_dims=64, ann_threshold=1234, ann_target_recall=0.9)
    params = fit_params(settings)
    assert (params.dims, params.ivf_min_items, params.target_recall) == (64, 1234, 0.9)
    assert params.k == max(settings.candidates, settings.top_k)
