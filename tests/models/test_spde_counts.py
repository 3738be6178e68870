"""The Poisson SPDE model with the field integrated out (models/spde_counts.py).

A reduced ``--quick`` run (150 sites, 1.5 km mesh, grid step 1.5): about 10 s once the
Laplace graph is compiled (the first compilation can take minutes on a loaded machine).
"""

import numpy as np
import pytest

from models.spde_counts import TRUTH, build_model, fit, simulate_data


@pytest.fixture(scope="module")
def quick_data():
    return simulate_data(m=150, h=1.5, seed=3)


def test_simulated_data(quick_data):
    d = quick_data
    assert d["A"].shape == (150, d["mesh"].n)
    np.testing.assert_allclose(np.asarray(d["A"].sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert d["y"].dtype.kind == "i" and d["y"].min() >= 0


def test_logp_finite_and_gradient(quick_data):
    model = build_model(quick_data)
    point = model.initial_point()
    lp = model.compile_logp()(point)
    g = model.compile_dlogp()(point)
    assert np.isfinite(lp) and np.all(np.isfinite(g))


def test_quick_fit_recovers_truth(quick_data):
    res = fit(quick_data, draws=200, dz=1.5)
    for name in ("b0", "field_sigma"):
        assert abs(res["mean"][name] - TRUTH[name]) < 4 * res["sd"][name] + 0.1
    assert res["mean"]["field_range"] > 0
