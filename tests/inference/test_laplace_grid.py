"""``fit_laplace_grid``: INLA-style grid integration against exact posteriors."""

from __future__ import annotations

import json

import numpy as np
import pymc as pm
import pytest

from pymc_sparse.inference.laplace_grid import fit_laplace_grid


def test_grid_matches_conjugate_normal_posterior(rng):
    # mu ~ N(0, 2^2), y_i ~ N(mu, 1.5^2): posterior N(m, s^2) in closed form; a second,
    # independent N(1, 0.5^2) parameter makes the grid two-dimensional.
    y = rng.normal(0.7, 1.5, 20)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 2.0)
        pm.Normal("z", 1.0, 0.5)
        pm.Normal("y", mu, 1.5, observed=y)
    idata = fit_laplace_grid(model, draws=4000, seed=1)
    prec = 1 / 4 + y.size / 1.5**2
    m, s = (y.sum() / 1.5**2) / prec, prec**-0.5
    mean = json.loads(idata.posterior.attrs["grid_mean"])
    sd = json.loads(idata.posterior.attrs["grid_sd"])
    assert mean["mu"] == pytest.approx(m, abs=1e-3 * s)
    assert sd["mu"] == pytest.approx(s, rel=0.03)
    assert mean["z"] == pytest.approx(1.0, abs=1e-3) and sd["z"] == pytest.approx(0.5, rel=0.03)
    assert float(idata.posterior["mu"].mean()) == pytest.approx(m, abs=0.1 * s)
    # log p(y): exact for a Gaussian posterior up to the grid's truncation (1 %).
    from scipy.stats import multivariate_normal

    cov = np.full((y.size, y.size), 4.0) + 1.5**2 * np.eye(y.size)
    exact = multivariate_normal(np.zeros(y.size), cov).logpdf(y)
    assert idata.posterior.attrs["log_marginal_likelihood"] == pytest.approx(exact, abs=0.03)


def test_grid_refuses_many_dimensions():
    with pm.Model() as model:
        pm.Normal("x", 0.0, 1.0, shape=8)
    with pytest.raises(ValueError, match="8 free dimensions"):
        fit_laplace_grid(model)
