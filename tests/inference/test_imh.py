"""sample_imh: exactness against posteriors known in closed form or by quadrature."""

from __future__ import annotations

import arviz as az
import numpy as np
import pymc as pm
import pytest
import scipy.sparse as sp
from scipy.integrate import trapezoid

from pymc_sparse import MarginalGMRFNormal, sample_imh, sample_latent
from pymc_sparse.ops.matrix import SparseMatrix
from tests.helpers import lattice_adjacency


def _mc_se(idata, name):
    x = idata.posterior[name]
    return float(x.std()) / np.sqrt(float(az.ess(idata, var_names=[name])[name]))


def test_conjugate_normal_mean_and_variance():
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, 1.0, size=10)
    with pm.Model():
        mu = pm.Normal("mu", 0.0, 10.0)
        pm.Normal("y", mu, 1.0, observed=y)
        idata = sample_imh(1500, 600, chains=2, random_seed=1, progressbar=False)
    prec = 1 / 100 + y.size
    mean, var = y.sum() / prec, 1 / prec
    post = idata.posterior["mu"]
    assert post.shape == (2, 1500)
    assert abs(float(post.mean()) - mean) < 5 * _mc_se(idata, "mu")
    assert abs(float(post.var()) / var - 1) < 0.15
    assert idata.sample_stats.attrs["acceptance_rate"] > 0.5  # a Gaussian is easy
    assert float(az.rhat(idata)["mu"]) < 1.02


def test_skewed_scale_posterior_matches_quadrature():
    # sigma | y for 4 observations: a skewed posterior with a long right tail in sigma
    y = np.array([0.3, -0.8, 0.5, 1.9])
    with pm.Model():
        sigma = pm.HalfNormal("sigma", 2.0)
        pm.Normal("y", 0.0, sigma, observed=y)
        idata = sample_imh(3000, 1000, chains=2, random_seed=2, progressbar=False)
    s = np.linspace(1e-4, 30, 300_001)
    logd = -(s**2) / 8 - y.size * np.log(s) - (y**2).sum() / (2 * s**2)
    dens = np.exp(logd - logd.max())
    dens /= trapezoid(dens, s)
    mean = trapezoid(s * dens, s)
    sd = np.sqrt(trapezoid((s - mean) ** 2 * dens, s))
    cdf = np.cumsum(dens) * (s[1] - s[0])
    post = idata.posterior["sigma"].values.ravel()
    assert abs(post.mean() - mean) < 5 * _mc_se(idata, "sigma")
    assert abs(post.std() / sd - 1) < 0.15
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(post, q) - s[np.searchsorted(cdf, q)]) < 0.1 * sd
    # the log-transformed value is not reported, as with pm.sample
    assert "sigma_log__" not in idata.posterior


def test_marginal_gmrf_model_and_latent_recovery():
    W = lattice_adjacency(4, 5)
    n = W.shape[0]
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    rng = np.random.default_rng(3)
    y = rng.normal(size=n)
    with pm.Model(coords={"site": np.arange(n)}) as model:
        tau = pm.Gamma("tau", 2.0, 1.0)
        alpha = pm.Uniform("alpha", 0.0, 0.99)
        sigma = pm.HalfNormal("sigma", 1.0)
        Q = tau * (SparseMatrix.from_scipy(D) - alpha * SparseMatrix.from_scipy(W))
        MarginalGMRFNormal("y", Q=Q, mu=0.0, sigma=sigma, observed=y, dims="site")
        pm.Deterministic("log_tau", pm.math.log(tau))
        idata = sample_imh(500, 600, chains=2, random_seed=4, progressbar=False)
    assert set(idata.posterior.data_vars) == {"tau", "alpha", "sigma", "log_tau"}
    np.testing.assert_allclose(idata.posterior["log_tau"], np.log(idata.posterior["tau"]))
    assert max(float(v) for v in az.rhat(idata).data_vars.values()) < 1.05
    assert idata.sample_stats.attrs["n_logp_evals"] > 2 * (500 + 500 // 4)
    lat = sample_latent(idata, model, thin=50, seed=5, progressbar=False)
    assert lat["x_mean"].shape == (n,)


def test_draws_are_the_same_in_worker_processes():
    """cores=2 (tuning split, chains side by side in forked workers) == cores=1."""
    W = lattice_adjacency(4, 4)
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    y = np.random.default_rng(6).normal(size=W.shape[0])
    with pm.Model():
        tau = pm.Gamma("tau", 2.0, 1.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        Q = tau * (SparseMatrix.from_scipy(D) - 0.9 * SparseMatrix.from_scipy(W))
        MarginalGMRFNormal("y", Q=Q, mu=0.0, sigma=sigma, observed=y)
        runs = [
            sample_imh(60, 200, chains=2, random_seed=7, progressbar=False, cores=c) for c in (1, 2)
        ]
    for name in ("tau", "sigma"):
        np.testing.assert_array_equal(runs[0].posterior[name], runs[1].posterior[name])
    assert not np.array_equal(runs[0].posterior["tau"][0], runs[0].posterior["tau"][1])


def test_refuses_high_dimensional_models_and_bad_arguments():
    with pm.Model():
        pm.Normal("x", size=25)
        with pytest.raises(ValueError, match="unconstrained dimensions"):
            sample_imh(10, 100, progressbar=False)
        with pytest.raises(ValueError, match="tune >= 20"):
            sample_imh(10, 5, progressbar=False)
    with pm.Model():
        pm.Normal("x", size=2)
        with pytest.warns(UserWarning, match="tune=50 importance draws"):
            sample_imh(10, 50, progressbar=False, random_seed=0)
    with pm.Model(), pytest.raises(ValueError, match="no free variables"):
        pm.Normal("y", 0, 1, observed=[0.0])
        sample_imh(10, 100, progressbar=False)


# -- robustness (issue 18) -----------------------------------------------------------


@pytest.mark.parametrize("k", [3, 6], ids=["k3", "k6"])
def test_degenerate_mixture_component_is_repaired_not_raised(k):
    from pymc_sparse.inference._mixture import _fit_mixture

    rng = np.random.default_rng(k)
    scales = np.logspace(-3, 2, k)
    for trial in range(40):
        # a broad cloud plus a tight cluster that holds most of the (truncated) weight
        x = np.concatenate([rng.normal(size=(300, k)), 5 + 1e-9 * rng.normal(size=(6, k))])
        x *= scales
        w = np.full(x.shape[0], 1e-6)
        w[300 : 300 + 1 + trial % 6] = 1.0
        w /= w.sum()
        q = _fit_mixture(x, w, 3, 5.0)
        draws = q.rvs(50, rng)
        assert np.all(np.isfinite(q.logpdf(draws))) and np.all(np.isfinite(q.logpdf(x)))


def test_singular_t_shape_is_repaired():
    from pymc_sparse.inference._mixture import _t

    t = _t(np.zeros(3), np.diag([1.0, 1e-14, 0.0]), 5.0)
    assert np.isfinite(t.logpdf(np.zeros(3)))


def test_module_compiles_without_warnings():
    import pathlib
    import warnings

    import pymc_sparse.inference.imh as imh

    src = pathlib.Path(imh.__file__).read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # invalid escape sequences warn at compile time
        compile(src, imh.__file__, "exec")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "draws", "tune"), [(18, 1000, 1000), (7, 200, 500)], ids=["seed18", "seed7"]
)
def test_issue_seeds_on_marginal_car_posterior(seed, draws, tune):
    from models.lattice_gaussian_marginal import build_model, simulate_data

    model = build_model(simulate_data(4))  # 16 nodes, Gaussian observations
    idata = sample_imh(draws, tune, model=model, random_seed=seed, progressbar=False)
    assert idata.sample_stats.attrs["acceptance_rate"] > 0.2
    assert max(float(v) for v in az.rhat(idata).data_vars.values()) < 1.1


@pytest.mark.parametrize("n", [1, 2, 50, 300])
def test_evaluation_order_is_a_short_path_permutation(n, monkeypatch):
    from pymc_sparse.inference import _evaluate as imh

    x = np.random.default_rng(n).normal(size=(n, 3)) * [1.0, 10.0, 0.1]
    order = imh.evaluation_order(x)
    assert sorted(order.tolist()) == list(range(n))
    if n >= 50:
        z = x / x.std(axis=0)
        path = np.linalg.norm(np.diff(z[order], axis=0), axis=1).sum()
        shuffled = np.linalg.norm(np.diff(z, axis=0), axis=1).sum()
        assert path < 0.5 * shuffled
        monkeypatch.setattr(imh, "_GREEDY_MAX", 10)  # the principal-axis sort
        order = imh.evaluation_order(x)
        assert sorted(order.tolist()) == list(range(n))
