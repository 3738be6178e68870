r"""Exact draws from :math:`N(\mu, Q^{-1})` with the cached sparse factor."""

from __future__ import annotations

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE

__all__ = ["sample_gmrf_numeric"]


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
