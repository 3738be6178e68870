"""Inputs and dense oracles of the fuzz suite.

Graphs are a small fixed set (compiled functions are cached per pattern and backend);
values are drawn per example.  :func:`classify` decides from a dense eigen-decomposition
of the diagonally scaled matrix :math:`H = D^{-1/2} Q D^{-1/2}` what a correct answer is:
``"valid"`` (a finite answer equal to the dense reference is required), ``"invalid"``
(NaN in graphs, a named error outside them) or ``"either"`` (numerically ambiguous: NaN,
a named error, or a finite answer within the reference's rounding tolerance).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

EPS = np.finfo(np.float64).eps


def _ring_with_chords(n, chords, seed):
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    r = np.concatenate([i, rng.integers(0, n, chords)])
    c = np.concatenate([(i + 1) % n, rng.integers(0, n, chords)])
    W = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(n, n)).tocsc()
    W = ((W + W.T) > 0).astype(np.float64)
    W.setdiag(0)
    W.eliminate_zeros()
    return sp.csc_matrix(W)


def _lattice(m):
    T = sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m))
    return sp.csc_matrix(sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T))


def _blocks():
    # two components and an isolated node
    return sp.csc_matrix(
        sp.block_diag([_lattice(2), _ring_with_chords(5, 2, 1), sp.csc_matrix((1, 1))])
    )


#: name -> binary adjacency (symmetric, zero diagonal)
GRAPHS = {
    "lattice4": _lattice(4),
    "random12": _ring_with_chords(12, 6, 0),
    "path9": sp.csc_matrix(sp.diags([np.ones(8), np.ones(8)], [-1, 1])),
    "blocks": _blocks(),
}
#: graphs without isolated nodes (CAR, ICAR, BYM2 need neighbours by default)
CONNECTED = ("lattice4", "random12", "path9")

KINDS = ("spd", "scaled", "near_singular", "singular", "indefinite")


def pattern_matrix(name):
    """Return the graph's pattern as a matrix: the adjacency plus the diagonal."""
    W = GRAPHS[name]
    return sp.csc_matrix(W + sp.identity(W.shape[0]))


def values(name, kind, rng):
    """Return a dense symmetric matrix of ``kind`` on the graph's pattern."""
    W = GRAPHS[name].toarray()
    n = W.shape[0]
    wts = np.exp(rng.normal(0.0, 1.5, (n, n)))
    wts = np.triu(wts, 1)
    Wv = W * (wts + wts.T)
    R = np.diag(Wv.sum(axis=1)) - Wv  # singular: constants (per component) are null
    if kind == "singular":
        Q = R
    elif kind == "near_singular":
        Q = R + 10.0 ** rng.uniform(-11, -5) * np.diag(np.maximum(np.diag(R), 1.0))
    elif kind == "indefinite":
        Q = R + np.diag(np.maximum(np.diag(R), 1.0)) * 0.1
        lam = np.linalg.eigvalsh(Q)
        Q = Q - (lam[0] + rng.uniform(0.01, 0.5) * (lam[-1] - lam[0])) * np.eye(n)
    else:
        alpha = rng.uniform(-0.95, 0.95)
        Q = np.diag(np.diag(R) + rng.uniform(0.05, 2.0, n)) + alpha * (R - np.diag(np.diag(R)))
    if kind in ("scaled", "singular", "near_singular") and rng.uniform() < 0.7:
        s = np.exp(rng.normal(0.0, 5.0, n))  # a congruence over ~10 orders of magnitude
        Q = s[:, None] * Q * s[None, :]
    return Q


def classify(Q, kind=None):
    """Return ``(verdict, kappa)``: verdict in {"valid", "invalid", "either"}.

    ``kappa`` is the condition number of the diagonally scaled matrix (inf if invalid).
    """
    d = np.diag(Q)
    if kind == "singular" or np.any(d <= 0):
        return "invalid", np.inf
    s = 1.0 / np.sqrt(d)
    lam = np.linalg.eigvalsh(s[:, None] * Q * s[None, :])
    if lam[0] < -1e-8:
        return "invalid", np.inf
    if lam[0] < 1e-9:
        return "either", lam[-1] / max(lam[0], 1e-300)
    return "valid", lam[-1] / lam[0]


def logdet_spd(Q):
    """Return ``log det Q`` by a Cholesky factor of the diagonally scaled matrix.

    Cholesky is invariant under diagonal scaling (van der Sluis), so this stays accurate
    for the congruence-scaled inputs where LU-based ``slogdet`` of ``Q`` itself need not.
    """
    d = np.sqrt(np.diag(Q))
    L = np.linalg.cholesky(Q / np.outer(d, d))
    return 2.0 * (np.log(np.diag(L)).sum() + np.log(d).sum())


def marginal_logp(Q, y, sigma):
    r"""Return :math:`\log N(y; 0, Q^{-1} + \sigma^2 I)` through :math:`P = Q + I/\sigma^2`.

    With :math:`(Q^{-1} + \sigma^2 I)^{-1} = I/\sigma^2 - P^{-1}/\sigma^4` and
    :math:`\det(Q^{-1} + \sigma^2 I) = \det P\,\sigma^{2n} / \det Q`: no dense inverse.
    """
    n = Q.shape[0]
    P = Q + np.eye(n) / sigma**2
    d = np.sqrt(np.diag(P))
    z = np.linalg.solve(P / np.outer(d, d), y / d) / d
    quad = y @ y / sigma**2 - y @ z / sigma**4
    logdet_c = logdet_spd(P) + 2 * n * np.log(sigma) - logdet_spd(Q)
    return -0.5 * quad - 0.5 * logdet_c - 0.5 * n * np.log(2 * np.pi)


def lower_data(Q, pattern):
    """Return the values of dense ``Q`` in the pattern's data order."""
    return np.asarray(Q[pattern.rows, pattern.cols], dtype=np.float64)


def tolerance(kappa, n):
    """Return the relative tolerance of a backward-stable answer: ``100 n kappa eps``."""
    return 100.0 * n * kappa * EPS + 1e-10


def check_linalg(Q, verdict, kappa, ld, x, b, selinv, mvar, pattern):
    """Assert the contract on one evaluation: right answer, or NaN; never finite and wrong."""
    finite = np.isfinite(ld) and np.all(np.isfinite(x)) and np.all(np.isfinite(selinv))
    if verdict == "invalid":
        assert np.isnan(ld) or ld == -np.inf, ld
        assert np.all(np.isnan(x)) and np.all(np.isnan(selinv)) and np.all(np.isnan(mvar))
        return False
    if verdict == "valid":
        assert finite, (ld, kappa)
    if not finite:
        assert not np.isfinite(ld) and np.all(np.isnan(x)), "partly NaN answer"
        return False
    n = Q.shape[0]
    tol = tolerance(kappa, n)
    ref_ld = logdet_spd(Q)
    assert abs(ld - ref_ld) <= 1e-9 * abs(ref_ld) + tol, (ld, ref_ld, kappa)
    dh = np.sqrt(np.diag(Q))
    H = Q / np.outer(dh, dh)
    Hinv = np.linalg.inv(H)
    # forward errors in the scaled variables (D^{1/2} x, D^{1/2} S D^{1/2})
    xr = np.linalg.solve(Q, b)
    err = np.linalg.norm(dh * (x - xr)) / max(np.linalg.norm(dh * xr), 1e-300)
    assert err <= tol, (err, kappa)
    Sref = Hinv[pattern.rows, pattern.cols]
    Sgot = selinv * dh[pattern.rows] * dh[pattern.cols]
    assert np.max(np.abs(Sgot - Sref)) <= tol * np.max(np.abs(Hinv)), kappa
    np.testing.assert_allclose(
        mvar * dh**2, np.diag(Hinv), rtol=tol, atol=tol * np.max(np.abs(Hinv))
    )
    return True
