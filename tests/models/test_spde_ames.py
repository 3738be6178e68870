"""The SPDE house-price model (models/spde_ames.py): data, GP covariance, marginal logp."""

from __future__ import annotations

import hashlib

import numpy as np
import pytensor.tensor as pt
import pytest
from scipy.special import kv
from scipy.stats import multivariate_normal

from models._data import DATA_DIR
from models.spde_ames import Matern1, build_gp_model, build_mesh, build_model, load_ames
from pymc_sparse.spde.precision import SPDEPrecision, kappa_tau


def test_data_as_documented():
    raw = (DATA_DIR / "ames_housing_points.csv").read_bytes()
    sha = "58db8bca678f9c9d1167123258d17a20576cdbf525805522091f7fcbcd26803b"
    assert hashlib.sha256(raw).hexdigest() == sha  # models/data/SOURCE.md
    data = load_ames()
    assert data["xy"].shape == (2930, 2) and abs(data["y"].mean()) < 1e-12
    span = np.ptp(data["xy"], axis=0)
    assert 5 < span.min() and span.max() < 15  # km across Ames
    assert len(np.unique(data["xy"].round(6), axis=0)) == 2924


def test_matern1_covariance_matches_scipy():
    X = np.random.default_rng(0).uniform(size=(6, 2))
    ls = 0.4
    K = (2.0 * Matern1(2, ls=ls)(pt.as_tensor(X))).eval()
    r = np.linalg.norm(X[:, None] - X[None], axis=2) / ls
    ref = 2.0 * np.where(r > 0, r * kv(1, np.maximum(r, 1e-300)), 1.0)
    np.testing.assert_allclose(K, ref, rtol=1e-5, atol=1e-6)


def test_spde_marginal_logp_matches_dense():
    data = load_ames(60, seed=3)
    mesh = build_mesh(data["xy"], max_edge=(0.6, 2.0))
    model = build_model(data, mesh, logdet="exact")
    point = model.initial_point()
    logp = model.compile_logp(vars=model.observed_RVs)(point)
    rho = 1.0 / np.exp(point["field_inv_range_log__"])
    sig, noise = np.exp(point["field_sigma_log__"]), np.exp(point["noise_log__"])
    Q = SPDEPrecision(mesh, 2).matrix(*kappa_tau(rho, sig, 2)).toarray()
    A = mesh.projector(data["xy"]).toarray()
    cov = A @ np.linalg.solve(Q, A.T) + noise**2 * np.eye(60)
    np.testing.assert_allclose(
        logp, multivariate_normal(np.zeros(60), cov).logpdf(data["y"]), rtol=1e-10
    )


@pytest.mark.slow
# The dense GP's dot products make PyTensor look for BLAS; without one it only warns.
@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")
def test_gp_model_builds():
    gp = build_gp_model(load_ames(40, seed=1))
    point = gp.initial_point()
    assert np.isfinite(gp.compile_logp()(point))
    assert np.all(np.isfinite(gp.compile_dlogp()(point)))
