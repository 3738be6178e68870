r"""Selected inversion of a sparse Cholesky factor (Takahashi recursions).

Given a lower-triangular Cholesky factor :math:`L` of a symmetric positive-definite
matrix, :math:`LL^\top = PQP^\top`, the covariance :math:`Z = (LL^\top)^{-1}` satisfies
:math:`ZL = L^{-\top}`, which read column by column from the last one gives, for
:math:`i \ge j` with :math:`i` in the structure of column :math:`j` of :math:`L`,

.. math::

    Z_{ij} = \frac{\delta_{ij}}{L_{jj}^2}
             - \frac{1}{L_{jj}} \sum_{k > j,\; L_{kj} \neq 0} Z_{ik} L_{kj}.

Every :math:`Z_{ik}` on the right lies in the pattern of :math:`L + L^\top` (the
pattern of a Cholesky factor is chordal), so the recursion computes :math:`Z` on the
pattern of :math:`L` without ever touching an entry outside it.  That set contains
the pattern of :math:`Q`, which is all the gradient of :math:`\log\det Q` needs.

This module holds only NumPy/numba kernels; it imports nothing from PyTensor.

References
----------
.. [1] Takahashi, K., Fagan, J. and Chen, M.-S. (1973). Formation of a sparse bus
   impedance matrix and its application to short circuit study. PICA Conference.
.. [2] Rue, H. and Martino, S. (2007). Approximate Bayesian inference for hierarchical
   Gaussian Markov random field models. J. Stat. Plan. Inference 137, 3177-3192.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["map_pattern_to_factor", "takahashi_simplicial"]


@numba.njit(cache=True, nogil=True)
def takahashi_simplicial(indptr, indices, data):  # pragma: no cover - compiled
    """Selected inverse ``Z = (L L')^{-1}`` on the pattern of ``L``.

    Parameters
    ----------
    indptr, indices, data : ndarray
        Lower-triangular CSC factor with sorted rows, diagonal first in each column.

    Returns
    -------
    ndarray
        Values of ``Z`` in the same positions as ``data``.
    """
    n = indptr.size - 1
    Z = np.zeros_like(data)
    pos = np.full(n, -1, dtype=np.int64)
    acc = np.zeros(n, dtype=data.dtype)
    for j in range(n - 1, -1, -1):
        p0 = indptr[j]
        p1 = indptr[j + 1]
        ljj = data[p0]
        for p in range(p0 + 1, p1):
            pos[indices[p]] = p
            acc[indices[p]] = 0.0
        for p in range(p0 + 1, p1):
            k = indices[p]
            lkj = data[p]
            # Column k of Z holds Z[i, k] for rows i >= k; keep the rows in struct(j).
            for q in range(indptr[k], indptr[k + 1]):
                i = indices[q]
                pi = pos[i]
                if pi >= 0:
                    z = Z[q]
                    acc[i] += lkj * z
                    if i != k:
                        acc[k] += data[pi] * z
        s = 0.0
        for p in range(p0 + 1, p1):
            i = indices[p]
            zij = -acc[i] / ljj
            Z[p] = zij
            s += data[p] * zij
            pos[i] = -1
        Z[p0] = 1.0 / (ljj * ljj) - s / ljj
    return Z


@numba.njit(cache=True)
def _locate(indptr, indices, rows, cols):  # pragma: no cover - compiled
    out = np.empty(rows.size, dtype=np.int64)
    for t in range(rows.size):
        r = rows[t]
        c = cols[t]
        if r < c:
            r, c = c, r
        lo = indptr[c]
        hi = indptr[c + 1]
        # Binary search for row r in column c.
        while lo < hi:
            mid = (lo + hi) // 2
            if indices[mid] < r:
                lo = mid + 1
            else:
                hi = mid
        if lo < indptr[c + 1] and indices[lo] == r:
            out[t] = lo
        else:
            out[t] = -1
    return out


def map_pattern_to_factor(pattern, perm, L_indptr, L_indices) -> np.ndarray:
    """Position in ``L.data`` of each stored entry of ``pattern`` after permutation.

    Parameters
    ----------
    pattern : SparsityPattern
        Lower-triangle pattern of ``Q``.
    perm : ndarray
        Fill-reducing permutation ``p`` with ``L L' = Q[p][:, p]``.
    L_indptr, L_indices : ndarray
        Structure of ``L`` with sorted rows.
    """
    pinv = np.empty_like(perm)
    pinv[perm] = np.arange(perm.size)
    out = _locate(
        np.asarray(L_indptr, np.int64),
        np.asarray(L_indices, np.int64),
        pinv[pattern.rows],
        pinv[pattern.cols],
    )
    if np.any(out < 0):  # pragma: no cover - would be a CHOLMOD contract violation
        raise RuntimeError("An entry of Q is missing from the pattern of its Cholesky factor.")
    return out
