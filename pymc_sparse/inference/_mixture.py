r"""The proposal of :func:`~pymc_sparse.inference.imh.sample_imh`: a mixture of t's.

A mixture of multivariate t distributions (:class:`_Proposal`), fitted to importance
weighted draws by weighted EM for a Gaussian mixture whose components are then widened to
t's with ``df`` degrees of freedom (Cappé et al. 2004), and extended by a defensive wide
component (Hesterberg 1995).  A fit that collapses (a component on a few heavily weighted
draws, a covariance SciPy finds singular) is repaired or dropped, never raised: see
:func:`_repair_cov` and :func:`_fit_mixture`.

References
----------
.. [1] Cappé, O., Guillin, A., Marin, J.-M. and Robert, C. P. (2004). Population Monte
   Carlo. *J. Comput. Graph. Statist.* 13, 907-929.
.. [2] Hesterberg, T. (1995). Weighted average importance sampling and defensive mixture
   distributions. *Technometrics* 37, 185-194.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_t

__all__: list[str] = []


def _t(loc, shape, df):
    """A multivariate t; a shape SciPy finds singular is repaired (never raises on it)."""
    try:
        return multivariate_t(loc=loc, shape=shape, df=df)
    except (ValueError, np.linalg.LinAlgError):
        k = len(loc)
        fixed = _repair_cov(np.asarray(shape, np.float64), float(np.trace(shape)) / k)
        return multivariate_t(loc=loc, shape=np.eye(k) if fixed is None else fixed, df=df)


class _Proposal:
    """Mixture of multivariate t's: weights, centres, scale matrices, degrees of freedom."""

    def __init__(self, weights, locs, shapes, dfs):
        self.logw = np.log(np.asarray(weights, np.float64) / np.sum(weights))
        self.parts = [_t(m, S, v) for m, S, v in zip(locs, shapes, dfs, strict=True)]
        self.dim = self.parts[0].dim

    def rvs(self, size, rng):
        which = rng.choice(len(self.parts), size=size, p=np.exp(self.logw))
        out = np.empty((size, self.dim))
        for i, part in enumerate(self.parts):
            m = which == i
            if m.any():
                out[m] = np.reshape(part.rvs(size=int(m.sum()), random_state=rng), (m.sum(), -1))
        return out

    def logpdf(self, x):
        x = np.reshape(x, (-1, self.dim))
        terms = [lw + np.reshape(p.logpdf(x), -1) for lw, p in zip(self.logw, self.parts)]
        return logsumexp(np.stack(terms), axis=0)

    def defensive(self, mean, cov, frac, factor, df):
        """This mixture with weight ``1 - frac`` plus a wide t component."""
        parts = self.parts
        return _Proposal(
            np.concatenate([(1 - frac) * np.exp(self.logw), [frac]]),
            [p.loc for p in parts] + [mean],
            [p.shape for p in parts] + [factor * cov],
            [p.df for p in parts] + [df],
        )


def _weighted_moments(x, w):
    m = w @ x
    d = x - m
    return m, (w[:, None] * d).T @ d


def _repair_cov(cov, scale: float):
    """Return ``cov`` symmetrised, eigenvalues floored; None if it is not finite.

    The floor is ``1e-6`` of the larger of its largest eigenvalue and ``scale``.  EM can
    shrink a component onto a few heavily weighted draws (rank-deficient covariance);
    SciPy's multivariate t rejects a shape whose eigenvalues fall below about ``1e-10`` of
    the largest (issue 18: ``LinAlgError`` in 1 of 20 seeds).  A floor of ``1e-6`` keeps
    every component a valid, if narrow, density (condition number at most ``1e6``).
    """
    cov = 0.5 * (cov + cov.T)
    if not np.all(np.isfinite(cov)):
        return None
    lam, V = np.linalg.eigh(cov)
    floor = 1e-6 * max(float(lam.max()), scale)
    if not floor > 0:
        return None
    return (V * np.maximum(lam, floor)) @ V.T


def _fit_mixture(x, w, components, df, iters=100):
    """Weighted EM for a Gaussian mixture; returns it as a mixture of t's (``df``).

    A component is dropped when its Kish effective sample size falls below ``k + 1``
    (too few draws to estimate a ``k``-dimensional covariance); every covariance is
    repaired by :func:`_repair_cov`.  If no component survives, the single t fitted to
    the weighted moments is returned, so a degenerate fit never raises.
    """
    n, k = x.shape
    m, S = _weighted_moments(x, w)
    scale = max(float(np.trace(S)) / k, np.finfo(np.float64).tiny)
    S = _repair_cov(S, scale)
    if S is None:
        raise RuntimeError("The importance weights are not finite; use pm.sample.")
    # Start: centres at weighted quantiles along the first principal axis.
    _, evecs = np.linalg.eigh(S)
    proj = (x - m) @ evecs[:, -1]
    order = np.argsort(proj)
    cdf = np.cumsum(w[order])
    qs = (np.arange(components) + 0.5) / components
    locs = x[order[np.minimum(np.searchsorted(cdf, qs), n - 1)]]
    covs = [S / components for _ in range(components)]
    pis = np.full(components, 1.0 / components)
    for _ in range(iters):
        logr = np.empty((n, len(covs)))
        for j, cov in enumerate(covs):
            logr[:, j] = np.log(pis[j]) + _normal_logpdf(x, locs[j], cov)
        logr -= logsumexp(logr, axis=1, keepdims=True)
        r = np.exp(logr) * w[:, None]
        nk = r.sum(axis=0)
        ess = nk**2 / np.maximum(np.sum(r**2, axis=0), np.finfo(np.float64).tiny)
        keep = (nk > 1e-3) & (ess >= k + 1)
        if not keep.any():
            return _Proposal([1.0], [m], [S], [df])
        r, nk = r[:, keep], nk[keep]
        pis = nk / nk.sum()
        locs = (r.T @ x) / nk[:, None]
        covs = []
        for j in range(locs.shape[0]):
            d = x - locs[j]
            covs.append(_repair_cov((r[:, j, None] * d).T @ d / nk[j], scale))
        if any(c is None for c in covs):
            return _Proposal([1.0], [m], [S], [df])
    return _Proposal(pis, list(locs), covs, [df] * len(covs))


def _normal_logpdf(x, mean, cov):
    """Log-density of N(mean, cov) at the rows of ``x``."""
    L = np.linalg.cholesky(cov)
    z = np.linalg.solve(L, (x - mean).T)
    half_logdet = np.log(np.diag(L)).sum()
    return -0.5 * np.sum(z * z, axis=0) - half_logdet - 0.5 * mean.size * np.log(2 * np.pi)
