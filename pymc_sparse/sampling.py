r"""Exact draws from :math:`N(\mu, Q^{-1})` with the cached sparse factor."""

from __future__ import annotations

import numpy as np

from pymc_sparse.cholmod import CACHE
from pymc_sparse.sparse import as_constant_pattern_data

__all__ = ["sample_gmrf", "sample_gmrf_numeric"]


def sample_gmrf_numeric(pattern, data, size=(), rng=None, mu=None) -> np.ndarray:
    r"""Draws ``x = mu + P' L^{-T} z``, ``z ~ N(0, I)``, where ``L L' = P Q P'``.

    Then :math:`\operatorname{Cov}(x) = P^\top L^{-\top} L^{-1} P = Q^{-1}` (Rue 2001).
    Returns an array of shape ``(*size, n)``; NaN-filled if ``Q`` is not positive definite.

    References
    ----------
    .. [1] Rue, H. (2001). Fast sampling of Gaussian Markov random fields.
       J. R. Stat. Soc. B 63, 325-338.
    """
    rng = np.random.default_rng(rng)
    size = (size,) if np.ndim(size) == 0 and size is not None and size != () else tuple(size or ())
    n = pattern.n
    f = CACHE.factor(pattern, data)
    m = int(np.prod(size)) if size else 1
    z = rng.standard_normal((n, m))
    x = f.solve_Lt_perm(z).T.reshape((*size, n))
    if mu is not None:
        x = x + np.asarray(mu, dtype=np.float64)
    return x


def sample_gmrf(Q, size=(), rng=None, mu=None) -> np.ndarray:
    r"""Exact draws from :math:`N(\mu, Q^{-1})` for a constant sparse precision ``Q``.

    Parameters
    ----------
    Q : scipy.sparse matrix or SparseMatrix with constant values
    size : int or tuple of int
        Batch shape of the draws.
    rng : numpy.random.Generator or seed, optional
    mu : array_like, optional
        Mean (broadcast against the draws).

    Returns
    -------
    ndarray of shape ``(*size, n)``

    Raises
    ------
    NotPositiveDefiniteError
        If ``Q`` is not positive definite.
    """
    pattern, data = as_constant_pattern_data(Q)
    CACHE.factor(pattern, data).raise_if_failed()
    return sample_gmrf_numeric(pattern, data, size=size, rng=rng, mu=mu)
