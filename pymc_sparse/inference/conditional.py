r"""The Gaussian conditional :math:`x \mid \theta, y` of a GMRF observed with Gaussian noise.

Numerics behind :class:`~pymc_sparse.distributions.marginal.MarginalGMRFNormal`'s latent
recovery (:func:`pymc_sparse.sample_latent`): the posterior precision
:math:`Q_{\mathrm{post}} = Q + A^\top D A` on the union pattern shared with the model's
log-density, so one cached factor serves both.
"""

from __future__ import annotations

import numpy as np

from pymc_sparse.distributions.marginal import ObservationMatrix
from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.lru import LRUCache
from pymc_sparse.linalg.pattern import SparsityPattern

__all__ = ["ConditionalPrecision", "conditional_latent_numeric", "conditional_precision_numeric"]


class ConditionalPrecision:
    r"""Numeric :math:`Q_{\mathrm{post}} = Q + A^\top D A` with the index maps built once.

    Uses the same union pattern as :func:`conditional_precision`, so the factor cache
    serves both the model's log-density and the latent recovery.
    """

    def __init__(self, pattern: SparsityPattern, design: ObservationMatrix):
        self.pattern = pattern
        self.design = design
        self.union, self.ia, self.ib = pattern.union(design.ata_pattern)

    def values(self, data, d) -> np.ndarray:
        r"""Return the stored values of :math:`Q_{\mathrm{post}}` on ``self.union``."""
        out = np.zeros(self.union.nnz)
        out[self.ia] += data  # ia and ib are injective maps into the union
        out[self.ib] += self.design.ata_values_numeric(d)
        return out


# Index maps of a (pattern, design) pair: O(nnz) integers each, cheap to rebuild.
_CONDITIONALS = LRUCache(16, "conditional precisions")


def conditional_precision_numeric(pattern, design) -> ConditionalPrecision:
    """Return the (memoised) :class:`ConditionalPrecision` of a pattern and a design."""
    return _CONDITIONALS.get_or_create(
        (pattern, design), lambda: ConditionalPrecision(pattern, design)
    )


def conditional_latent_numeric(pattern, data, mu, design: ObservationMatrix, sigma, y):
    r"""Mean and factor of the conditional :math:`x \mid \theta, y`.

    :math:`x \mid \theta, y \sim N(Q_{\mathrm{post}}^{-1}(Q\mu + c), Q_{\mathrm{post}}^{-1})`
    with :math:`c = A^\top D y`.

    Returns
    -------
    mean : ndarray
        :math:`Q_{\mathrm{post}}^{-1}(Q\mu + A^\top D y)`, NaN if not positive definite.
    factor : Factor
        Cached factor of :math:`Q_{\mathrm{post}}` (``.solve_Lt_perm`` for draws,
        ``.marginal_variances()`` for the conditional variances).
    """
    data = np.asarray(data, np.float64)
    mu = np.broadcast_to(np.asarray(mu, np.float64), (pattern.n,))
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (design.m,))
    d = 1.0 / sigma**2
    cp = conditional_precision_numeric(pattern, design)
    f = CACHE.factor(cp.union, cp.values(data, d))
    rhs = design.A.T @ (d * np.asarray(y, np.float64))
    if np.any(mu):
        rhs = rhs + pattern.matvec(data, mu)
    return f.solve(rhs), f
