"""Smoke tests of the Laplace models in ``models/`` (tiny budgets; long runs are slow)."""

from __future__ import annotations

import json

import numpy as np
import pymc as pm
import pytest

from models import lattice_poisson_laplace as lattice
from models import scotland_bym2_laplace as scotland


def test_scotland_laplace_builds_and_evaluates():
    model = scotland.build_model(scotland.load_data())
    assert {v.name for v in model.free_RVs} == {"beta0", "beta1", "sigma", "rho"}
    assert model._pms_laplace.dropped == ("b", "rr")
    ip = model.initial_point()
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    assert np.isfinite(logp(ip)) and np.all(np.isfinite(dlogp(ip)))


def test_lattice_grid_fit_small():
    data = lattice.simulate_data(12, seed=3)
    res = lattice.fit(data, draws=200, latent_draws=4, seed=1)
    assert res["n"] == 144 and res["n_points"] >= 9
    assert set(res["mean"]) >= {"alpha", "tau"}
    assert res["latent"]["x"].shape[-1] == 144 and res["latent"]["beta0"].ndim == 2
    assert 0.0 < res["mean"]["alpha"] < 1.0 and res["field_rmse_vs_truth"] < res["field_sd_truth"]
    json.loads(res["idata"].posterior.attrs["grid_sd"])


@pytest.mark.slow
# From beta0 = 0 (the data say -6.6) the first leapfrog steps of PyMC's NUTS overflow
# (gradient ~1e5) before the step size adapts; the sampler recovers.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_nyc_laplace_samples():
    from models import nyc_bym2_laplace as nyc

    model = nyc.build_model(nyc.load_data())
    with model:
        idata = pm.sample(30, tune=30, chains=1, random_seed=1, progressbar=False)
    assert np.isfinite(idata.posterior["rho"].values).all()


@pytest.mark.slow
def test_check_laplace_scotland():
    from pymc_sparse.inference.laplace_check import check_laplace

    data = scotland.load_data()
    check = check_laplace(
        scotland.build_sampled_model(data), ["b"], draws=200, tune=200, chains=2, seed=1
    )
    # Moderate counts: the Laplace marginal agrees with the field-sampled fit.
    assert np.all(np.abs(check.hyper["diff_sd"]) < 0.3 + 3 * check.hyper["mc_noise_sd"])
    assert set(check.latent.index) == {"b_u", "b_v", "b", "rr"}


@pytest.mark.slow
def test_lattice_grid_matches_nuts_small():
    out = lattice.check_nuts(lattice.simulate_data(20, seed=5), draws=500, tune=500)
    t = out["grid_vs_nuts_marginal"]
    assert np.all(np.abs(t["diff_sd"]) < 0.2 + 3 * t["mc_noise_sd"])
