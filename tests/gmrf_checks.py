"""Statistical checks and graph loaders shared by the distribution tests.

The Gaussian check: given draws ``X`` (N x n), a claimed mean ``m`` and a whitening
matrix ``A`` (r x n) with ``A Sigma A' = I_r`` for the claimed covariance ``Sigma``, the
whitened draws ``Y = (X - m) A'`` are iid N(0, I_r) under the claim.  Three tests:

* mean: ``N |ybar|^2 ~ chi2(r)``;
* scale: ``sum |y|^2 ~ chi2(N r)`` (two-sided);
* covariance: each entry of ``S = Y'Y / N`` is approximately normal with mean
  ``delta_ij`` and variance ``(1 + delta_ij) / N``; the smallest of the two-sided
  p-values, Bonferroni-corrected over the ``r (r + 1) / 2`` entries.

``gaussian_pvalue`` returns the smallest of the three (each Bonferroni-corrected by 3).
With fixed seeds the tests are deterministic; a correct sampler passes ``p > 1e-3``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy import stats

DATA = Path(__file__).parent / "data"


def scotland_adjacency(variant: str = "connected") -> sp.csc_matrix:
    """56 x 56 binary adjacency of the Scottish lip cancer districts (Stan graphs)."""
    e = np.loadtxt(
        DATA / f"scotland_edges_stan_{variant}.csv", delimiter=",", skiprows=1, dtype=int
    )
    e = e - 1  # 1-based edge list
    W = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(56, 56))
    return (W + W.T).tocsc()


def gaussian_pvalues(X, m, A) -> dict:
    X = np.asarray(X, dtype=np.float64)
    N = X.shape[0]
    Y = (X - m) @ np.asarray(A).T
    r = Y.shape[1]
    ybar = Y.mean(axis=0)
    p_mean = stats.chi2.sf(N * ybar @ ybar, r)
    tot = np.sum(Y * Y)
    c = stats.chi2.cdf(tot, N * r)
    p_scale = 2 * min(c, 1 - c)
    S = Y.T @ Y / N
    iu = np.triu_indices(r)
    sd = np.sqrt((1.0 + (iu[0] == iu[1])) / N)
    z = (S[iu] - (iu[0] == iu[1])) / sd
    p_cov = min(1.0, 2 * stats.norm.sf(np.abs(z).max()) * iu[0].size)
    return {"mean": p_mean, "scale": p_scale, "cov": p_cov}


def gaussian_pvalue(X, m, A) -> float:
    return min(1.0, 3 * min(gaussian_pvalues(X, m, A).values()))


def whitener_from_precision(Q) -> np.ndarray:
    """``L'`` with ``Q = L L'``: whitens draws whose covariance is ``Q^{-1}``."""
    return np.linalg.cholesky(np.asarray(Q)).T


def whitener_from_pinv_precision(R, sigma=1.0, tol=1e-9) -> np.ndarray:
    """Whitens draws with covariance ``sigma^2 R^+`` on the range of ``R``."""
    lam, U = np.linalg.eigh(np.asarray(R))
    keep = lam > tol * lam.max()
    return (np.sqrt(lam[keep])[:, None] * U[:, keep].T) / sigma


#: Small test graphs compile much faster without C code and graph optimisation.
FAST = "FAST_COMPILE"


def whitener_from_covariance(S, tol=1e-9) -> np.ndarray:
    """Whitens draws with (possibly singular) covariance ``S`` on its range."""
    lam, U = np.linalg.eigh(np.asarray(S))
    keep = lam > tol * lam.max()
    return U[:, keep].T / np.sqrt(lam[keep])[:, None]
