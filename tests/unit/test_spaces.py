from __future__ import annotations

import numpy as np
import pytest

from models.index import FitParams, SpaceRefused, fit_space, raw_space
from streams.settings import InterestSettings
from streams.state.spaces import fit_params, refit_due
from tests.unit.test_index import clustered


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
    assert params.min_recall == settings.space_min_recall
    assert params.k == max(settings.candidates, settings.top_k)


def test_a_refused_fit_is_tried_again_only_after_the_catalogue_grew() -> None:
    settings = InterestSettings(space_min_items=1000, space_refit_growth=2.0)
    assert not refit_due(None, 1500, settings, refused_at=1000)
    assert not refit_due(raw_space("m", 8), 1999, settings, refused_at=1000)
    assert refit_due(None, 2000, settings, refused_at=1000)


def test_a_space_that_loses_the_neighbours_is_refused() -> None:
    # Isotropic noise: 32 of 256 directions keep ~1/8 of the energy, and the neighbours.
    noise = np.random.default_rng(1).standard_normal((3000, 256)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    with pytest.raises(SpaceRefused) as refused:
        fit_space("m", noise, 3000, FitParams(dims=32, ivf_min_items=10**9, min_recall=0.9, k=20))
    assert refused.value.recall < 0.5
    # Off (min_recall 0): served all the same, its recall on record.
    space = fit_space("m", noise, 3000, FitParams(dims=32, ivf_min_items=10**9, k=20))
    assert space.meta["space_recall"] == pytest.approx(refused.value.recall)


def test_a_space_of_a_structured_catalogue_keeps_the_neighbours() -> None:
    x = clustered(3000, 256)
    space = fit_space("m", x, 3000, FitParams(dims=32, ivf_min_items=10**9, min_recall=0.9, k=20))
    assert space.meta["space_recall"] >= 0.9
