r"""Static sparsity patterns of symmetric matrices.

A symmetric sparse matrix is stored as the *lower triangle* (diagonal included) of its
compressed-sparse-column (CSC) form: a :class:`SparsityPattern` holds the index arrays,
fixed when a graph is built, and a dense vector ``data`` of length ``nnz`` holds the
values, which may be symbolic.  The matrix represented is

.. math:: Q = T + T^\top - \operatorname{diag}(T), \qquad T = \operatorname{tril}(Q),

so a stored off-diagonal value appears twice in ``Q`` and a perturbation of it moves
both symmetric entries.  Gradients with respect to ``data`` follow the same convention.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["SparsityPattern"]


class SparsityPattern:
    """Immutable, hashable lower-triangle CSC pattern of a symmetric ``n x n`` matrix.

    Parameters
    ----------
    n : int
        Matrix order.
    indptr, indices : array_like of int
        CSC column pointers (length ``n + 1``) and row indices of the lower triangle.
        Rows must be sorted and unique within each column and satisfy ``row >= col``.

    Notes
    -----
    Equality and hashing use the index bytes, so two patterns built independently
    from the same graph share one symbolic Cholesky analysis in the factor cache.
    """

    __slots__ = ("__dict__", "_hash", "indices", "indptr", "n")

    def __init__(self, n: int, indptr, indices):
        n = int(n)
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        if n < 1:
            raise ValueError(f"A pattern needs n >= 1, got n={n}.")
        if indptr.shape != (n + 1,) or indptr[0] != 0 or indptr[-1] != indices.size:
            raise ValueError(
                f"indptr must have length n + 1 = {n + 1}, start at 0 and end at nnz = "
                f"{indices.size}; got length {indptr.size}."
            )
        if np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must be non-decreasing.")
        cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise ValueError(f"Row indices must lie in [0, {n}).")
        if np.any(indices < cols):
            raise ValueError(
                "The pattern must hold only the lower triangle (row >= col). Pass the full "
                "symmetric matrix to SparsityPattern.from_scipy, which keeps its lower triangle."
            )
        same_col = cols[1:] == cols[:-1]
        if np.any(same_col & (indices[1:] <= indices[:-1])):
            raise ValueError("Row indices must be sorted and unique within each column.")
        indptr.flags.writeable = False
        indices.flags.writeable = False
        self.n = n
        self.indptr = indptr
        self.indices = indices
        h = hashlib.blake2b(digest_size=16)
        h.update(np.int64(n).tobytes())
        h.update(indptr.tobytes())
        h.update(indices.tobytes())
        self._hash = h.digest()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_scipy(cls, A, *, keep_diagonal: bool = True) -> tuple[SparsityPattern, np.ndarray]:
        """Pattern and values of the lower triangle of a symmetric scipy matrix.

        The structural pattern of ``A`` is kept, explicit zeros included, and the
        diagonal is always part of the pattern (a Cholesky factor needs it).

        Returns
        -------
        pattern : SparsityPattern
        data : ndarray
            Values of ``tril(A)`` in pattern order.
        """
        A = sp.csc_matrix(A)
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A symmetric matrix must be square, got shape {A.shape}.")
        n = A.shape[0]
        A.sum_duplicates()
        A.sort_indices()
        T = sp.tril(A, format="coo")
        rows = np.concatenate([T.row, np.arange(n)]) if keep_diagonal else T.row
        cols = np.concatenate([T.col, np.arange(n)]) if keep_diagonal else T.col
        vals = np.concatenate([T.data, np.zeros(n)]) if keep_diagonal else T.data
        # Duplicates (diagonal listed twice) add up, so the explicit-zero diagonal is harmless.
        M = sp.csc_matrix((vals.astype(np.float64), (rows, cols)), shape=(n, n))
        M.sum_duplicates()
        M.sort_indices()
        return cls(n, M.indptr, M.indices), np.asarray(M.data, dtype=np.float64)

    @classmethod
    def from_coo(cls, n: int, rows, cols) -> SparsityPattern:
        """Pattern from (row, col) pairs of either triangle; duplicates are merged."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        r = np.maximum(rows, cols)
        c = np.minimum(rows, cols)
        r = np.concatenate([r, np.arange(n)])
        c = np.concatenate([c, np.arange(n)])
        M = sp.csc_matrix((np.ones(r.size), (r, c)), shape=(n, n))
        M.sum_duplicates()
        M.sort_indices()
        return cls(n, M.indptr, M.indices)

    # -- derived index arrays ---------------------------------------------------------
    @property
    def nnz(self) -> int:
        """Number of stored (lower-triangle) entries."""
        return int(self.indices.size)

    @cached_property
    def rows(self) -> np.ndarray:
        """Row index of each stored entry."""
        return self.indices

    @cached_property
    def cols(self) -> np.ndarray:
        """Column index of each stored entry."""
        c = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))
        c.flags.writeable = False
        return c

    @cached_property
    def is_diag(self) -> np.ndarray:
        """Boolean mask of diagonal entries."""
        m = self.rows == self.cols
        m.flags.writeable = False
        return m

    @cached_property
    def diag_index(self) -> np.ndarray:
        """Position in ``data`` of each diagonal entry, or -1 where the diagonal is absent."""
        out = np.full(self.n, -1, dtype=np.int64)
        out[self.rows[self.is_diag]] = np.flatnonzero(self.is_diag)
        out.flags.writeable = False
        return out

    @cached_property
    def has_full_diagonal(self) -> bool:
        """Whether every diagonal entry is stored (required by the Cholesky Ops)."""
        return bool(np.all(self.diag_index >= 0))

    @cached_property
    def symmetric_weights(self) -> np.ndarray:
        """1 on the diagonal and 2 off it: ``sum(w * a * b)`` is the Frobenius product."""
        w = np.where(self.is_diag, 1.0, 2.0)
        w.flags.writeable = False
        return w

    # -- conversions ----------------------------------------------------------------
    def to_scipy(self, data, *, lower_only: bool = False) -> sp.csc_matrix:
        """The (full symmetric, or lower) scipy CSC matrix with the given values."""
        data = np.asarray(data, dtype=np.float64)
        if data.shape != (self.nnz,):
            raise ValueError(f"data must have shape ({self.nnz},), got {data.shape}.")
        T = sp.csc_matrix((data, self.indices, self.indptr), shape=(self.n, self.n))
        if lower_only:
            return T
        off = ~self.is_diag
        U = sp.csc_matrix((data[off], (self.cols[off], self.rows[off])), shape=(self.n, self.n))
        return (T + U).tocsc()

    def lower_csc(self, data) -> sp.csc_matrix:
        """Lower-triangle CSC matrix sharing the pattern's index arrays (no copy of indices)."""
        return sp.csc_matrix(
            (np.asarray(data, dtype=np.float64), self.indices, self.indptr),
            shape=(self.n, self.n),
        )

    def matvec(self, data, x) -> np.ndarray:
        r"""Return :math:`Q x` (or :math:`Q X` for an ``(n, k)`` array) from the stored values.

        The numeric matvec of the package: each stored off-diagonal value acts twice,
        :math:`(Qx)_i = \sum_{(i,j)} q_{ij} x_j + \sum_{(j,i),\, i \ne j} q_{ji} x_j`,
        as one sparse product with the lower triangle and one with its transpose.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] != self.n:
            raise ValueError(f"x has {x.shape[0]} rows; the matrix has n = {self.n}.")
        data = np.asarray(data, dtype=np.float64)
        if data.shape != (self.nnz,):
            raise ValueError(f"data has shape {data.shape}; expected ({self.nnz},).")
        return lower_matvec(self.indptr, self.indices, data, x)

    def index_of(self, rows, cols) -> np.ndarray:
        """Positions in ``data`` of entries (rows, cols) of either triangle; -1 if absent."""
        r = np.maximum(np.asarray(rows, np.int64), np.asarray(cols, np.int64))
        c = np.minimum(np.asarray(rows, np.int64), np.asarray(cols, np.int64))
        start = self.indptr[c]
        stop = self.indptr[c + 1]
        out = np.full(r.shape, -1, dtype=np.int64)
        # Sorted keys col * n + row make the whole look-up one searchsorted.
        keys = self.cols * self.n + self.rows
        q = c * self.n + r
        pos = np.searchsorted(keys, q)
        ok = (pos < keys.size) & (pos >= start) & (pos < stop)
        ok[ok] &= keys[pos[ok]] == q[ok]
        out[ok] = pos[ok]
        return out

    def union(self, other: SparsityPattern) -> tuple[SparsityPattern, np.ndarray, np.ndarray]:
        """Union pattern and the positions of each operand's entries in it."""
        if other.n != self.n:
            raise ValueError(f"Cannot combine patterns of order {self.n} and {other.n}.")
        if other == self:
            idx = np.arange(self.nnz)
            return self, idx, idx
        keys = np.union1d(self.cols * self.n + self.rows, other.cols * other.n + other.rows)
        c, r = np.divmod(keys, self.n)
        indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.add.at(indptr, c + 1, 1)
        u = SparsityPattern(self.n, np.cumsum(indptr), r)
        return u, u.index_of(self.rows, self.cols), u.index_of(other.rows, other.cols)

    # -- identity -----------------------------------------------------------------
    def __eq__(self, other) -> bool:
        return isinstance(other, SparsityPattern) and self._hash == other._hash

    def __hash__(self) -> int:
        return hash(self._hash)

    @property
    def key(self) -> bytes:
        """16-byte digest of the index arrays (used as a cache key)."""
        return self._hash

    def __repr__(self) -> str:
        return f"SparsityPattern(n={self.n}, nnz={self.nnz})"

    def __reduce__(self):
        return (SparsityPattern, (self.n, np.array(self.indptr), np.array(self.indices)))


def lower_matvec(indptr, indices, data, x) -> np.ndarray:
    r"""Return :math:`Q x` for :math:`Q` given by its lower triangle in CSC form.

    :math:`(Qx)_i = \sum_{(i,j)} q_{ij} x_j + \sum_{(j,i),\, i \ne j} q_{ji} x_j`: each
    stored off-diagonal value acts twice.  ``x`` is ``(n,)`` (one compiled pass,
    :func:`lower_matvec_into`) or ``(n, k)`` (two sparse products with the stored
    triangle).  No checks: callers validate lengths (:meth:`SparsityPattern.matvec`, the
    quadratic-form Ops).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        y = np.zeros(x.shape[0])
        lower_matvec_into(np.asarray(data, np.float64), np.ascontiguousarray(x), indptr, indices, y)
        return y
    n = indptr.size - 1
    L = sp.csc_matrix((data, indices, indptr), shape=(n, n))
    return L @ x + L.T @ x - (L.diagonal() * x.T).T


@numba.njit(cache=True, nogil=True)
def lower_matvec_into(data, x, indptr, indices, y):  # pragma: no cover - compiled
    r"""``y += Q x`` for vectors, Q by its lower triangle in CSC (the loop of the C Op too).

    Returns :math:`\sum_j x_j y_j` after the update (:math:`x^\top Q x` when ``y``
    starts at 0): ``y[j]`` is final once column ``j`` is done, since later columns add
    only to rows below it, so the quadratic form costs no second pass.

    Used by :func:`lower_matvec`, the Laplace solver and the Numba dispatch of
    ``SparseMatVec``/``SparseQuadForm``: one pass over the stored values, no SciPy objects.
    Rows are sorted and unique within a column (:class:`SparsityPattern`), so a diagonal
    entry can only come first: it is handled once per column, not tested per entry.
    """
    n = indptr.shape[0] - 1
    tot = 0.0
    for j in range(n):
        xj = x[j]
        acc = 0.0
        k0, k1 = indptr[j], indptr[j + 1]
        if k0 < k1 and indices[k0] == j:
            acc = data[k0] * xj
            k0 += 1
        for k in range(k0, k1):
            i = indices[k]
            v = data[k]
            y[i] += v * xj
            acc += v * x[i]
        y[j] += acc
        tot += xj * y[j]
    return tot
