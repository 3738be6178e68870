"""Table set-up: adaptive levels, parallel sampling, fallbacks, and the certificate they keep."""

from __future__ import annotations

import multiprocessing
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import pymc_sparse.logdet1d.exact as exact_mod
from pymc_sparse.linalg.cholmod import cache_info, clear_cache
from pymc_sparse.logdet1d.adaptive import predicted_degree, tail_error
from pymc_sparse.logdet1d.chebyshev import _coefficients, _lobatto
from pymc_sparse.logdet1d.families import leroux_logdet_family, sar_logdet_family
from pymc_sparse.logdet1d.table import logdet_family
from tests.helpers import lattice_adjacency


def _car(m):
    W = lattice_adjacency(m)
    return sp.diags(np.asarray(W.sum(1)).ravel()), -W


def _off_node_points(fam, rng, k=60):
    """Uniform points and points graded toward both ends of the table (never its nodes)."""
    lo, hi = fam.lo, fam.hi
    span = hi - lo
    u = rng.uniform(lo, hi, k)
    near_hi = hi - span * 10.0 ** rng.uniform(-5, -1, k // 3)
    near_lo = lo + span * 10.0 ** rng.uniform(-5, -1, k // 3)
    return np.concatenate([u, near_hi, near_lo, [lo, hi]])


def _assert_within_certificate(fam, rng, k=60):
    """Table vs fresh exact values at off-node points: inside the bound it certifies."""
    info = fam.info
    assert info["certified"]
    for x in _off_node_points(fam, rng, k):
        g, dg = fam.exact(x)
        tol_f = info["atol"] + info["rtol"] * abs(g - fam.offset)
        tol_df = info["atol"] + info["rtol_df"] * abs(dg)
        # 4 * noise of a sample of g is part of the f bound (see logdet_family); it is
        # below 1e-12 at these sizes, so the atol of 1e-9 dominates.
        assert abs(fam.table(x) - g) <= tol_f + 1e-12, (x, fam.table(x) - g)
        assert abs(fam.table(x, 1) - dg) <= tol_df, (x, fam.table(x, 1) - dg)


# -- the error estimate behind the adaptive levels ---------------------------------------
@pytest.mark.parametrize("pole", [1.02, 1.05, 1.2, 1.5, 3.0, -1.1])
@pytest.mark.parametrize("m", [9, 17, 33])
def test_tail_error_bounds_the_interpolation_error(pole, m):
    """tail_error is an upper bound of the true sup error of the Lobatto interpolant.

    Coefficients decaying like rho^-j (rho the Bernstein parameter of the singularity)
    times different powers of j: a pole, logarithmic and square-root branch points, and
    a sum of poles spread beyond the interval (like the terms of f' = sum of
    -lambda / (1 - alpha lambda)).
    """
    xs = np.linspace(-1, 1, 4001)
    funcs = (
        lambda x: 1.0 / (pole - x),
        lambda x: np.log(abs(pole - x)),
        lambda x: np.sqrt(abs(pole - x)),
        lambda x: (pole - x) * np.log(abs(pole - x)),
        lambda x: sum(k / (pole * (1 + k / 10) - x) for k in range(1, 30)),
    )
    for f in funcs:
        d = _coefficients(f(_lobatto(m)))
        err = np.max(np.abs(np.polynomial.chebyshev.chebval(xs, d) - f(xs)))
        est = tail_error(d)
        # Rounding of the samples (~1e-16 relative) is below what an estimate can see.
        assert est >= err or err < 1e-13 * np.max(np.abs(f(xs))), (est, err)


def test_predicted_degree_extrapolates_geometric_decay():
    d = 0.3 ** np.arange(17)
    assert predicted_degree(d, 1e-12) == pytest.approx(np.log(1e-12) / np.log(0.3), abs=0.01)
    assert predicted_degree(d, 1.0) == 0.0
    assert np.isinf(predicted_degree(np.ones(17), 1e-12))  # no decay: undecided


# -- the builders ------------------------------------------------------------------------
def test_adaptive_builder_needs_fewer_samples_for_the_same_certificate(rng):
    """The adaptive levels use fewer factorisations than the fixed ladder, same bound.

    (40 x 40 lattice: 469 against 501; at 100 x 100, 745 against 1,177.)
    """
    A0, A1 = _car(40)
    sings = [(1.0, 1), (-1.0, 1)]
    fams = [
        logdet_family(A0, A1, (-0.9999, 0.9999), singularities=sings, adaptive_split=s)
        for s in (True, False)
    ]
    new, old = fams
    assert new.info["evaluations"] < old.info["evaluations"]
    for fam in fams:
        _assert_within_certificate(fam, rng)


def test_symbolic_analysis_is_reused_across_samples():
    clear_cache()
    A0, A1 = _car(20)
    fam = logdet_family(A0, A1, (0.0, 0.99), singularities=[(1.0, 1)], workers=1)
    info = cache_info()
    assert info["symbolic"] == 1
    assert info["numeric"] >= fam.info["evaluations"] > 50


# -- parallel sampling --------------------------------------------------------------------
def test_parallel_and_serial_tables_are_identical():
    A0, A1 = _car(30)
    kw = {"singularities": [(1.0, 1), (-1.0, 1)]}
    par = logdet_family(A0, A1, (-0.999, 0.999), workers=2, **kw)
    ser = logdet_family(A0, A1, (-0.999, 0.999), workers=1, **kw)
    assert par.info["workers"] == 2 and ser.info["workers"] == 1
    assert par.info["evaluations"] == ser.info["evaluations"]
    np.testing.assert_array_equal(par.breaks, ser.breaks)
    np.testing.assert_array_equal(par.coef, ser.coef)
    assert par == ser
    assert multiprocessing.active_children() == []  # the pool's processes were joined


def test_serial_below_the_size_threshold_by_default():
    A0, A1 = _car(10)
    fam = logdet_family(A0, A1, (0.0, 0.9), singularities=[(1.0, 1)])
    assert fam.info["workers"] == 1


def test_falls_back_to_serial_without_fork(monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    A0, A1 = _car(10)
    fam = logdet_family(A0, A1, (0.0, 0.9), singularities=[(1.0, 1)], workers=2)
    assert fam.info["workers"] == 1
    assert fam.info["certified"]


def _die(state, alpha):  # runs in a forked worker: simulates one killed by the OOM killer
    import os

    os._exit(3)


def test_dead_worker_falls_back_to_serial_with_a_warning(monkeypatch):
    monkeypatch.setattr(exact_mod, "_worker_sample", _die)
    A0, A1 = _car(10)
    ref = logdet_family(A0, A1, (0.0, 0.9), singularities=[(1.0, 1)], workers=1)
    with pytest.warns(RuntimeWarning, match="continuing in one process"):
        fam = logdet_family(A0, A1, (0.0, 0.9), singularities=[(1.0, 1)], workers=2)
    assert fam.info["workers"] == 1
    np.testing.assert_array_equal(fam.coef, ref.coef)
    assert multiprocessing.active_children() == []


def test_bad_workers_argument():
    A0, A1 = _car(5)
    with pytest.raises(ValueError, match="workers"):
        logdet_family(A0, A1, (0.0, 0.9), singularities=[(1.0, 1)], workers=0)


# -- the certificate holds on every family ------------------------------------------------
def test_leroux_within_certificate_off_nodes(rng):
    fam = leroux_logdet_family(lattice_adjacency(25), workers=2)
    _assert_within_certificate(fam, rng)


def test_sar_within_certificate_off_nodes(rng):
    W = lattice_adjacency(25)
    fam = sar_logdet_family(W, row_standardise=True)
    _assert_within_certificate(fam, rng)
    # Symmetric B = W: I - rho W is SPD for |rho| < 1/4 on a lattice (lambda_max < 4).
    fam = sar_logdet_family(W, (-0.2, 0.24), row_standardise=False)
    _assert_within_certificate(fam, rng)


def test_spde_family_within_certificate_off_nodes(rng):
    from pymc_sparse.spde.mesh import mesh_from_points
    from pymc_sparse.spde.precision import SPDEPrecision

    mesh = mesh_from_points(
        np.random.default_rng(1).uniform(size=(60, 2)), max_edge=(0.08, 0.3), extension=0.4
    )
    S = SPDEPrecision(mesh, alpha=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fam = S.logdet_family((0.05, 5.0), workers=2)
    assert fam.info["workers"] == 2
    _assert_within_certificate(fam, rng, k=40)
