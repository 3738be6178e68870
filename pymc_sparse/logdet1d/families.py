r"""The CAR, Leroux and SAR log-determinant families, built once per graph (bounded cache).

Each is a :class:`~pymc_sparse.logdet1d.table.LogDetFamily` of a pencil
:math:`A_0 + \alpha A_1` whose singular points (connected and bipartite components) are
known from the graph and removed exactly before interpolation.
"""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.graph import bipartite_components, components
from pymc_sparse.linalg.lru import LRUCache
from pymc_sparse.linalg.validate import symmetric_csc
from pymc_sparse.logdet1d.table import LogDetFamily, Singularity, logdet_family

__all__ = [
    "car_logdet_family",
    "car_logdet_family_from_values",
    "leroux_logdet_family",
    "sar_logdet_family",
]

# A table holds a few hundred Chebyshev coefficients (kilobytes) but costs seconds to
# minutes to build: keep the 16 most recent graphs.
_FAMILIES = LRUCache(16, "logdet tables")


def _graph(W, name="W"):
    W = symmetric_csc(W, name, rtol=1e-12).copy()
    W.setdiag(0)
    W.eliminate_zeros()
    if W.nnz and W.data.min() < 0:
        raise ValueError(f"`{name}` must have non-negative weights.")
    return W


def _components(W):
    """Return the numbers of connected and bipartite components, and the labels."""
    k, labels = components(W)
    return k, bipartite_components(W, labels), labels


def car_logdet_family(W, interval=None, *, margin: float = 1e-4, **kwargs) -> LogDetFamily:
    r"""Tabulated :math:`\log\det(D - \alpha W)` of the proper CAR precision.

    :math:`D = \operatorname{diag}(W\mathbf 1)`.  With :math:`M = D^{-1/2} W D^{-1/2}`
    and eigenvalues :math:`\lambda_i \in [-1, 1]`,
    :math:`\log\det(D - \alpha W) = \sum \log d_i + \sum_i \log(1 - \alpha\lambda_i)`:
    singular at :math:`\alpha = 1` with multiplicity the number of connected components
    and at :math:`\alpha = -1` with multiplicity the number of bipartite components (a
    lattice is bipartite).  Both terms are removed exactly before interpolation.

    Parameters
    ----------
    W : scipy.sparse matrix or ndarray
        Symmetric adjacency (non-negative weights, zero diagonal, no isolated nodes).
    interval : (float, float), optional
        Tabulated range of :math:`\alpha`; default ``(-1 + margin, 1 - margin)``, pm.CAR's
        support.  A prior on (0, 1) halves the build with ``(0, 1 - margin)``.
    margin : float
        Distance of the default interval from the singular points.
    **kwargs
        Passed to :func:`logdet_family` (``atol``, ``rtol``, ``check_points``...).

    Notes
    -----
    The caller adds :math:`n\log\tau` for :math:`Q = \tau(D - \alpha W)`.  Families are
    cached on the graph, interval and options: a second call with the same ``W`` returns
    the same table without rebuilding it.
    """
    W = _graph(W)
    d = np.asarray(W.sum(axis=1)).ravel()
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValueError(
            f"Node {i} has no neighbours: D - alpha W is singular for every alpha. Remove "
            "isolated nodes (model them separately), give them degree 1 with "
            "car_logdet_family_from_values (pms.CAR's isolated='iid'), or use the Leroux form."
        )
    return _car_family(d, W, interval, margin, **kwargs)


def _car_family(d, W, interval, margin, **kwargs):
    """The CAR family of degrees ``d`` and adjacency ``W``, built once per argument set.

    PyMC builds a model's log-density more than once, and benchmarks and notebooks build
    models again: a table costs minutes at n = 1e5, so it is cached on the values.
    """
    W = sp.csc_matrix(W)
    W.sort_indices()
    h = hashlib.blake2b(digest_size=16)
    for a in (np.asarray(d, np.float64), np.array(W.shape), W.indptr, W.indices, W.data):
        h.update(np.ascontiguousarray(a).tobytes())
    key = (
        h.digest(),
        None if interval is None else (float(interval[0]), float(interval[1])),
        float(margin),
        tuple(sorted(kwargs.items())),
    )
    return _FAMILIES.get_or_create(key, lambda: _build_car_family(d, W, interval, margin, **kwargs))


def _build_car_family(d, W, interval, margin, **kwargs):
    k, bip, labels = _components(W)
    # Components without edges (isolated nodes given a degree by the caller) contribute a
    # constant log d_i: they are not singular at alpha = +-1.
    k -= int(np.sum(np.bincount(labels) == 1))
    if interval is None:
        interval = (-1.0 + margin, 1.0 - margin)
    if not (-1.0 < interval[0] < interval[1] < 1.0):
        raise ValueError(f"A proper CAR needs -1 < lo < hi < 1, got interval={interval!r}.")
    # Non-bipartite graphs: the lower singular point 1/lambda_min < -1 is not known, so
    # grade toward -1 without removing a term (multiplicity 0).
    sings = (Singularity(1.0, k), Singularity(-1.0, bip))
    return logdet_family(sp.diags(d), -W, interval, singularities=sings, **kwargs)


def car_logdet_family_from_values(pattern, d_data, w_data, interval=None, *, margin=1e-4, **kwargs):
    r"""CAR family from stored values of :math:`D` and :math:`W` on a pattern.

    The form ``pymc_sparse.distributions.car`` keeps (``Q = tau * (d_data - alpha *
    w_data)``).  Nodes without neighbours may carry any positive ``d`` (``isolated="iid"``
    gives them 1); they add a constant and are not singular at :math:`\alpha = \pm 1`.
    Results are cached on the values (as for :func:`car_logdet_family`), so building a
    model's log-density twice (PyMC does) tabulates once.
    """
    d_data = np.asarray(d_data, dtype=np.float64)
    w_data = np.asarray(w_data, dtype=np.float64)
    d = d_data[pattern.diag_index]
    if np.any(d <= 0):
        raise ValueError("Every node needs a positive diagonal value d_i of D.")
    W = pattern.to_scipy(np.where(pattern.is_diag, 0.0, w_data))
    W.eliminate_zeros()
    return _car_family(d, W, interval, margin, **kwargs)


def leroux_logdet_family(W, interval=(0.0, 1.0 - 1e-4), **kwargs) -> LogDetFamily:
    r"""Tabulated :math:`\log\det\bigl((1-\rho) I + \rho (D - W)\bigr)` (Leroux et al. 2000).

    :math:`A_0 = I`, :math:`A_1 = D - W - I`.  The eigenvalues are
    :math:`1 - \rho + \rho\mu_i` with :math:`\mu_i` those of the graph Laplacian, so the
    matrix is singular at :math:`\rho = 1` with multiplicity the number of connected
    components (isolated nodes included), removed exactly.  Support :math:`[0, 1)`.
    """
    W = _graph(W)
    n = W.shape[0]
    if not (0.0 <= interval[0] < interval[1] < 1.0):
        raise ValueError(f"The Leroux model needs 0 <= lo < hi < 1, got interval={interval!r}.")
    k, _, _ = _components(W)
    d = np.asarray(W.sum(axis=1)).ravel()
    A1 = sp.diags(d - 1.0) - W
    sings = [Singularity(1.0, k)]
    return logdet_family(sp.identity(n), A1, interval, singularities=sings, **kwargs)


def sar_logdet_family(W, interval=None, *, row_standardise: bool = True, **kwargs) -> LogDetFamily:
    r"""Tabulated SAR log-determinant, :math:`\log\det((I - \rho B)^\top (I - \rho B))`.

    It equals :math:`2\log|\det(I - \rho B)|`.

    Covered cases:

    * ``row_standardise=True``: :math:`B = D^{-1} W` with symmetric :math:`W` (the usual
      row-standardised SAR).  Then :math:`\det(I - \rho B) = \det(D - \rho W)/\det D`, the
      CAR determinant, positive for :math:`\rho \in (-1, 1)`; the returned family is the
      CAR family of :math:`W`.
    * ``row_standardise=False``: symmetric :math:`B = W`, :math:`I - \rho W` positive
      definite for :math:`\rho \in (1/\lambda_{\min}, 1/\lambda_{\max})`; pass ``interval``
      inside that range.

    Returns
    -------
    LogDetFamily
        Of :math:`\log\det(D - \rho W)` (row-standardised) or :math:`\log\det(I - \rho W)`.
        The SAR precision's log-determinant is ``2 * (fam(rho) - fam.logdet_d)`` with
        ``fam.logdet_d`` = :math:`\sum\log d_i` (0 when not row-standardised).
    """
    W = _graph(W)
    if row_standardise:
        # A copy: the CAR family is cached and shared, and its logdet_d must stay 0.
        fam = copy.copy(car_logdet_family(W, interval, **kwargs))
        fam.logdet_d = math.fsum(np.log(np.asarray(W.sum(axis=1)).ravel()))
        return fam
    if interval is None:
        raise ValueError("Pass `interval` inside (1/lambda_min(W), 1/lambda_max(W)).")
    n = W.shape[0]
    fam = logdet_family(sp.identity(n), -W, interval, **kwargs)
    fam.logdet_d = 0.0
    return fam
