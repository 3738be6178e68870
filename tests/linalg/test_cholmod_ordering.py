"""The factor cache's ``"auto"`` ordering (the cheaper of NESDIS and AMD by flops from
n = 5,000, of METIS and AMD below) and its compiled value fingerprint.

Values do not depend on the ordering beyond rounding, so every check is against a dense
NumPy reference; the choice itself is checked against the flop counts of the two
analyses, and a CHOLMOD without NESDIS falls back to AMD.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import pymc_sparse.linalg.cholmod as cholmod_mod
from pymc_sparse.linalg.cholmod import CholeskyCache
from pymc_sparse.linalg.cholmod_struct import symbolic_flops
from pymc_sparse.linalg.pattern import SparsityPattern
from tests.helpers import car_precision, grid_laplacian, lattice_adjacency
from tests.linalg.test_takahashi import lattice3, rel_err

CASES = {
    "car32": lambda: car_precision(lattice_adjacency(32), 0.9, 2.0),  # AMD: fewer flops
    "grid40": lambda: grid_laplacian(40),
    "lattice3_10": lambda: lattice3(10),
    "lattice3_18": lambda: lattice3(18),  # n = 5,832: NESDIS, fewer flops, supernodal
}


def _candidates(n):
    return ("nesdis", "amd") if n >= cholmod_mod._NESDIS_MIN_N else ("metis", "amd")


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_auto_keeps_the_cheaper_analysis(name):
    A = sp.csc_matrix(CASES[name]())
    pattern, data = SparsityPattern.from_scipy(A)
    auto = CholeskyCache(ordering="auto").factor(pattern, data).symbolic
    flops = {}
    for ordering in _candidates(pattern.n):
        sym = CholeskyCache(ordering=ordering).factor(pattern, data).symbolic
        flops[ordering] = symbolic_flops(sym.analysis, pattern.n)
    assert auto.ordering in flops
    assert symbolic_flops(auto.analysis, pattern.n) == min(flops.values())


def test_auto_picks_nesdis_on_a_3d_lattice_and_amd_on_a_small_2d_one():
    # The two regimes the rule is for (docstring of CholeskyCache).
    for A, expected in ((lattice3(18), "nesdis"), (car_precision(lattice_adjacency(32)), "amd")):
        pattern, data = SparsityPattern.from_scipy(sp.csc_matrix(A))
        assert CholeskyCache().factor(pattern, data).symbolic.ordering == expected


SMALL = [name for name in CASES if name != "lattice3_18"]


@pytest.mark.parametrize("name", SMALL, ids=SMALL)
def test_auto_ordering_values_match_dense(name):
    A = sp.csc_matrix(CASES[name]())
    pattern, data = SparsityPattern.from_scipy(A)
    f = CholeskyCache().factor(pattern, data)
    assert f.ok
    dense = A.toarray()
    C = np.linalg.inv(dense)
    assert f.logdet() == pytest.approx(np.linalg.slogdet(dense)[1], rel=1e-12)
    assert rel_err(f.selected_inverse(), C[pattern.rows, pattern.cols]) < 1e-11
    b = np.arange(A.shape[0], dtype=float)
    assert rel_err(f.solve(b), np.linalg.solve(dense, b)) < 1e-11


def test_auto_falls_back_to_amd_without_nesdis(monkeypatch):
    real = cholmod_mod._cholmod.analyze

    def analyze(A, ordering_method="default", **kw):
        if ordering_method == "nesdis":
            raise cholmod_mod._cholmod.CholmodError("no partition module")
        return real(A, ordering_method=ordering_method, **kw)

    monkeypatch.setattr(cholmod_mod._cholmod, "analyze", analyze)
    A = lattice3(18)  # n = 5,832: "auto" would try NESDIS
    pattern, data = SparsityPattern.from_scipy(A)
    f = CholeskyCache().factor(pattern, data)
    assert f.symbolic.ordering == "amd"
    ref = CholeskyCache(ordering="metis").factor(pattern, data).logdet()
    assert f.logdet() == pytest.approx(ref, rel=1e-12)
    # An ordering asked for by name is not replaced behind the caller's back.
    with pytest.raises(cholmod_mod._cholmod.CholmodError, match="partition"):
        CholeskyCache(ordering="nesdis").factor(pattern, data)


def test_fingerprint_tells_vectors_apart():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(1001)  # not a multiple of the 4 lanes
    h = cholmod_mod._digest(a)
    assert isinstance(h, int) and cholmod_mod._digest(a.copy()) == h
    others = [np.roll(a, 1), a[:-1], np.append(a, 0.0), a * (1 + 1e-15), np.zeros(1001)]
    assert len({h, *(cholmod_mod._digest(np.ascontiguousarray(b)) for b in others)}) == 6


def test_non_finite_values_give_nan_and_a_collision_refactorises(monkeypatch):
    A = grid_laplacian(12)
    pattern, data = SparsityPattern.from_scipy(A)
    cache = CholeskyCache()
    bad = data.copy()
    bad[3] = np.inf
    f = cache.factor(pattern, bad)
    assert not f.ok and np.isnan(f.logdet()) and np.all(np.isnan(f.selected_inverse()))
    # Every vector gets one fingerprint: the value comparison still keeps them apart.
    monkeypatch.setattr(cholmod_mod, "_digest", lambda d: 7)
    for scale in (1.0, 2.0, 1.0, 3.0):
        ld = cache.factor(pattern, scale * data).logdet()
        assert ld == pytest.approx(np.linalg.slogdet(scale * A.toarray())[1], rel=1e-12)
