"""Smoke tests of the reference models in ``models/``.

Default tests: every model builds from its shipped or simulated data, compiles, and has
a finite log-density and gradient at its initial point; model-specific checks compare
with dense references.  ``--runslow``: each model's ``main`` runs a short sampling.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("models._data")

from models import (
    inverse_problem,
    lattice_car,
    nyc_bym2,
    scotland_bym2,
    scotland_islands,
    space_time,
)

SMALL = {
    "scotland_bym2": lambda: scotland_bym2.load_data(),
    "scotland_islands": lambda: scotland_islands.load_data(),
    "nyc_bym2": lambda: nyc_bym2.load_data(),
    "lattice_car": lambda: lattice_car.load_data(n=64),
    "inverse_problem": lambda: inverse_problem.load_data(edges=60),
    "space_time": lambda: space_time.load_data(years=3),
}
MODULES = {
    "scotland_bym2": scotland_bym2,
    "scotland_islands": scotland_islands,
    "nyc_bym2": nyc_bym2,
    "lattice_car": lattice_car,
    "inverse_problem": inverse_problem,
    "space_time": space_time,
}


@pytest.mark.parametrize("name", list(MODULES), ids=list(MODULES))
def test_model_logp_and_gradient_finite(name):
    model = MODULES[name].build_model(SMALL[name]())
    point = model.initial_point()
    logp = model.compile_logp()(point)
    grad = model.compile_dlogp()(point)
    assert np.isfinite(logp)
    assert grad.size > 0 and np.all(np.isfinite(grad))


def test_scotland_data_as_specified():
    data = scotland_bym2.load_data()
    assert data["n"] == 56 and data["W"].nnz == 2 * 132
    assert sp.csgraph.connected_components(data["W"])[0] == 1
    # x = AFF / 10 and one-decimal E (Stan/BUGS version of the data).
    assert np.allclose(np.round(data["E"], 1), data["E"])
    assert 0 <= data["x"].min() and data["x"].max() <= 2.4 + 1e-12
    model = scotland_bym2.build_model(data)
    assert {"beta0", "beta1", "sigma", "rho", "b_u", "b_v"} <= set(model.named_vars)


def test_scotland_demo_tiny_sample(monkeypatch, tmp_path):
    """The README demo's code path: sample, summary, plots (tiny run)."""
    monkeypatch.setattr(scotland_bym2, "OUTPUT", tmp_path)
    idata = scotland_bym2.main(["--draws", "20", "--tune", "20", "--chains", "1", "--cores", "1"])
    post = idata.posterior
    assert post["rr"].shape[-1] == 56 and np.all(post["rr"].values > 0)
    # The ICAR part sums to zero exactly on the connected graph.
    assert np.abs(post["b_u"].sum("area")).max() < 1e-10
    assert (tmp_path / "scotland_bym2_trace.png").exists()
    assert (tmp_path / "scotland_bym2_rr_vs_smr.png").exists()


@pytest.mark.slow
def test_scotland_demo_agrees_with_published_stan_fit(monkeypatch, tmp_path):
    """The demo's posterior means within 0.25 published sd of the Stan case study's."""
    monkeypatch.setattr(scotland_bym2, "OUTPUT", tmp_path)
    idata = scotland_bym2.main(["--draws", "600", "--tune", "600", "--chains", "2"])
    diffs = scotland_bym2.compare_with_published(idata)
    assert max(diffs.values()) < 0.25, diffs


def test_islands_graph_bookkeeping():
    info = scotland_islands.describe_graph(scotland_islands.load_data())
    assert info["n_components"] == 4
    assert sorted(info["singletons"].tolist()) == [5, 7, 10]  # Orkney, Shetland, W. Isles
    assert np.allclose(info["scaling"][info["singletons"]], 1.0)
    assert info["free_icar"] == 55  # one constraint, on the mainland only
    model = scotland_islands.build_model(scotland_islands.load_data())
    value = model.rvs_to_values[model["b_u"]]  # the transformed (free) coordinates
    assert model.initial_point()[value.name].size == 55


def test_nyc_exposure_floor():
    data = nyc_bym2.load_data()
    assert data["n"] == 1921 and data["W"].nnz == 2 * 5461
    big = data["pop"] >= 10
    assert data["E"].min() == 10.0 and np.all(data["E"][big] == data["pop"][big])


def test_lattice_car_exact_and_interpolated_agree():
    """The tabulated log-determinant gives the same density as the CAR distribution."""
    data = lattice_car.load_data(n=64)
    exact = lattice_car.build_model(data, logdet="exact")
    interp = lattice_car.build_model(data, logdet="interpolated")
    pt_e = exact.initial_point()
    pt_e["alpha_interval__"] = np.asarray(0.7)  # away from the symmetric starting point
    pt_i = dict(pt_e)
    lp_e, lp_i = exact.compile_logp()(pt_e), interp.compile_logp()(pt_i)
    # CAR's value variable has no transform and Flat adds nothing: same point, same density.
    assert lp_i == pytest.approx(lp_e, rel=1e-9)
    g_e, g_i = exact.compile_dlogp()(pt_e), interp.compile_dlogp()(pt_i)
    np.testing.assert_allclose(g_i, g_e, rtol=1e-7, atol=1e-8)


def test_lattice_simulation_shapes():
    data = lattice_car.simulate_data(n=50, likelihood="gaussian")
    assert data["shape"] == (8, 8) and data["x"].size == 64 and data["y"].size == 64
    with pytest.raises(ValueError, match="likelihood"):
        lattice_car.simulate_data(n=50, likelihood="binomial")


@pytest.mark.parametrize("graph", ["random", "lattice"])
def test_inverse_problem_gradient_matches_dense(graph):
    chk = inverse_problem.check_dense(200, graph)
    assert chk["loss_rel_err"] < 1e-12
    assert chk["grad_max_rel_err"] < 1e-10
    assert chk["fd_rel_err"] < 1e-5


def test_inverse_problem_graph_sizes():
    n, e = inverse_problem.make_graph(100_000, "lattice")
    assert e.shape[0] >= 100_000 and n == 225 * 225
    n, e = inverse_problem.make_graph(300, "random")
    assert e.shape[0] == 300 and np.all(e[:, 0] != e[:, 1])
    assert np.unique(np.sort(e, axis=1), axis=0).shape[0] == 300


def test_space_time_precision_is_kronecker():
    """The symbolic AR1 ⊗ scaled-Leroux precision of the model equals a dense reference."""
    import pytensor.tensor as pt

    from pymc_sparse.ops.matrix import kron
    from pymc_sparse.precision.builders import ar1_precision
    from pymc_sparse.precision.scaling import scaling_factor

    W = scotland_bym2.load_data()["W"]
    rho, lam = pt.scalar("rho"), pt.scalar("lam")
    Q = kron(ar1_precision(4, rho, unit_marginal=True), space_time.spatial_precision(W, lam))
    vals = Q.data.eval({rho: -0.6, lam: 0.3})
    R = np.diag(np.asarray(W.sum(axis=1)).ravel()) - W.toarray()
    c = scaling_factor(W)
    assert 0.3 < c < 0.7  # the Stan "connected" graph: 0.4853
    # Unit-marginal AR(1): the inverse of the correlation matrix rho^|s - t|.
    ar1 = np.linalg.inv((-0.6) ** np.abs(np.subtract.outer(np.arange(4), np.arange(4))))
    spatial = 0.7 * np.eye(56) + 0.3 * c * R
    np.testing.assert_allclose(Q.to_scipy(vals).toarray(), np.kron(ar1, spatial), atol=1e-12)
    np.testing.assert_allclose(space_time.spatial_precision(W, 0.3).toarray(), spatial, atol=1e-12)


def test_space_time_constrained_density_matches_dense():
    """log p(phi | 1'phi = 0) of the model (GMRF logp + Potential) vs a dense reference.

    Reference: phi ~ N(0, Q^-1) conditioned on 1'phi = 0 has covariance
    S - S 1 1'S / (1'S 1), S = Q^-1; in orthonormal coordinates u = B'x of the hyperplane
    it is N(0, B' S_c B), the density the sampler sees (ZeroSumTransform is orthonormal).
    """
    from pymc.model.transform.conditioning import remove_value_transforms
    from scipy.linalg import null_space
    from scipy.stats import multivariate_normal

    from pymc_sparse.precision.builders import ar1_precision

    T = 3
    data = space_time.load_data(years=T)
    model = remove_value_transforms(space_time.build_model(data))
    terms = [model["phi_flat"], model["phi_constraint"]]
    fn = model.compile_fn(model.logp(vars=terms, jacobian=False), inputs=None)
    N = T * 56
    B = null_space(np.ones((1, N)))
    rng = np.random.default_rng(5)
    x = B @ rng.standard_normal(N - 1)
    for rho, lam, sig in [(0.7, 0.8, 0.6), (-0.4, 0.2, 1.3), (0.95, 0.99, 0.1)]:
        Q = (
            sp.kron(
                ar1_precision(T, rho, unit_marginal=True),
                space_time.spatial_precision(data["W"], lam),
            ).toarray()
            / sig**2
        )
        S = np.linalg.inv(Q)
        s1 = S.sum(axis=1)
        Sc = S - np.outer(s1, s1) / s1.sum()
        ref = multivariate_normal(np.zeros(N - 1), B.T @ Sc @ B).logpdf(B.T @ x)
        point = {"phi_flat": x, "rho": rho, "lam": lam, "sigma": sig}
        got = fn(point)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-8)


def test_space_time_simulation_and_constraint():
    """Simulated field sums to zero and splits exactly into s + g + d; so does the model's."""
    data = space_time.load_data(years=5)
    tr = data["truth"]
    assert data["y"].shape == (5, 56) and tr["phi"].shape == (5, 56)
    assert abs(tr["phi"].sum()) < 1e-10
    np.testing.assert_allclose(tr["s"][None, :] + tr["g"][:, None] + tr["d"], tr["phi"], atol=1e-12)
    assert abs(tr["s"].sum()) < 1e-10 and abs(tr["g"].sum()) < 1e-10
    assert np.abs(tr["d"].sum(axis=0)).max() < 1e-10
    assert np.abs(tr["d"].sum(axis=1)).max() < 1e-10
    # Same seed, same data; a different number of years is a different data set.
    np.testing.assert_array_equal(space_time.load_data(years=5)["y"], data["y"])
    model = space_time.build_model(data)
    value = model.rvs_to_values[model["phi_flat"]]
    assert value.name == "phi_flat_zerosum__"
    u = np.random.default_rng(0).standard_normal(5 * 56 - 1)
    (x_of_u,) = model.replace_rvs_by_values([model["phi_flat"]])
    x = model.compile_fn(x_of_u, inputs=[value])({value.name: u})
    assert abs(x.sum()) < 1e-10 and np.abs(x).max() > 0.1
    with pytest.raises(ValueError, match="years >= 2"):
        space_time.simulate_data(years=1)


@pytest.mark.slow
def test_space_time_recovers_truth(monkeypatch, tmp_path):
    """A short run (2 x (300 + 300)) covers the simulated hyperparameters and field."""
    monkeypatch.setattr(scotland_bym2, "OUTPUT", tmp_path)
    idata = space_time.main(["--draws", "300", "--tune", "300", "--chains", "2", "--cores", "1"])
    post = idata.posterior
    for name, true in space_time.TRUTH.items():
        lo, hi = np.quantile(post[name].values, [0.005, 0.995])
        assert lo < true < hi, (name, true, lo, hi)
    truth = space_time.load_data()["truth"]
    for name, min_corr in (("phi", 0.9), ("s", 0.9), ("g", 0.8), ("d", 0.7)):
        est = post[name].mean(("chain", "draw")).values
        assert np.corrcoef(est.ravel(), truth[name].ravel())[0, 1] > min_corr, name
    assert (tmp_path / "space_time_effects.png").exists()


# -- short sampling runs of every model's main (--runslow) -----------------------------
SLOW_ARGS = {
    "scotland_bym2": ["--draws", "200", "--tune", "200", "--chains", "2"],
    "scotland_islands": ["--draws", "200", "--tune", "200", "--chains", "2"],
    "nyc_bym2": ["--draws", "100", "--tune", "100", "--chains", "2"],
    "lattice_car": ["--n", "1024", "--draws", "100", "--tune", "100", "--chains", "2"],
    "inverse_problem": ["--edges", "5000", "--maxiter", "10"],
    "space_time": ["--years", "4", "--draws", "100", "--tune", "100", "--chains", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_ARGS), ids=list(SLOW_ARGS))
def test_model_main_runs(name, monkeypatch, tmp_path):
    mod = MODULES[name]
    monkeypatch.setattr(mod, "OUTPUT", tmp_path, raising=False)
    monkeypatch.setattr(scotland_bym2, "OUTPUT", tmp_path)
    result = mod.main(SLOW_ARGS[name])
    assert result is not None
    assert list(tmp_path.glob("*.png"))
