r"""The public sampler: exact draws from :math:`N(\mu, Q^{-1})` for a constant ``Q``."""

from __future__ import annotations

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.sampling import sample_gmrf_numeric
from pymc_sparse.ops.matrix import as_constant_pattern_data


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
