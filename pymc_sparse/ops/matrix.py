r"""``SparseMatrix``: a static sparsity pattern plus a symbolic vector of values.

PyTensor's sparse variables cannot be jaxified unless constant, and CHOLMOD reads only
one triangle, so the package represents a symmetric sparse matrix as a
:class:`~pymc_sparse.linalg.pattern.SparsityPattern` known when the graph is built and a
dense PyTensor vector ``data`` of its lower-triangle values (see
:mod:`pymc_sparse.linalg.pattern` for the storage convention).  All arithmetic below keeps
the pattern static and is expressed with gathers and scatters of ``data``, so every
result is differentiable in every symbolic input at :math:`O(\mathrm{nnz})` cost and
runs on every PyTensor backend (C, NUMBA, JAX).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytensor.tensor as pt
import scipy.sparse as sp
from pytensor.graph.basic import Constant, Variable

from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.validate import symmetric_csc
from pymc_sparse.ops._index import const_index
from pymc_sparse.ops.quadform import _static_length, matvec, quad_form

__all__ = ["SparseMatrix", "as_constant_pattern_data", "as_sparse_matrix", "kron"]


def _as_float64_vector(data, what: str = "data"):
    if not isinstance(data, Variable):
        # Python/NumPy numbers: keep their full precision (no autocast to float32).
        arr = np.asarray(data)
        data = pt.as_tensor_variable(arr.astype(np.float64) if arr.dtype.kind in "biuf" else arr)
    if data.type.ndim != 1:
        raise TypeError(f"`{what}` must be a vector of stored values, got {data.type}.")
    if data.type.dtype == "float32" or data.type.dtype == "float16":
        warnings.warn(
            f"`{what}` is {data.type.dtype}; sparse Cholesky factorisations are not reliable "
            "in single precision, so it is upcast to float64. Pass float64 values (or set "
            "pytensor.config.floatX = 'float64') to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
    if data.type.dtype != "float64":
        if data.type.dtype.startswith("complex"):
            raise TypeError(f"`{what}` must be real, got {data.type.dtype}.")
        data = pt.cast(data, "float64")
    return data


def _check_symmetric_scipy(A, name: str = "Q", rtol: float = 1e-10):
    return symmetric_csc(
        A, name, rtol=rtol, hint="Pass a symmetric matrix: only its lower triangle is stored."
    )


class SparseMatrix:
    """A symmetric sparse matrix with a static pattern and symbolic values.

    Parameters
    ----------
    pattern : SparsityPattern
        Lower-triangle CSC pattern, fixed when the graph is built.
    data : TensorVariable or array_like
        Vector of ``pattern.nnz`` values in pattern order (float64; other real dtypes
        are cast, float32 with a warning).

    Examples
    --------
    >>> import scipy.sparse as sp, pymc_sparse as pms
    >>> W = sp.diags([1.0, 1.0], [-1, 1], shape=(4, 4))
    >>> D = sp.diags(W.sum(1).A1)
    >>> Q = 2.0 * (pms.SparseMatrix.from_scipy(D) - 0.9 * pms.SparseMatrix.from_scipy(W))
    >>> Q
    SparseMatrix(n=4, nnz=7)
    """

    __array_priority__ = 1000  # NumPy scalars on the left defer to our __rmul__.

    def __init__(self, pattern: SparsityPattern, data):
        if not isinstance(pattern, SparsityPattern):
            raise TypeError(f"`pattern` must be a SparsityPattern, got {type(pattern).__name__}.")
        data = _as_float64_vector(data)
        length = data.type.shape[0]
        if length is None and isinstance(data, Constant):
            length = data.data.shape[0]
        if length is not None and length != pattern.nnz:
            raise ValueError(
                f"{pattern!r} stores {pattern.nnz} values but `data` has {length}; values "
                "must follow the pattern's lower-triangle CSC order."
            )
        self.pattern = pattern
        self.data = data

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_scipy(cls, A, *, name: str = "Q") -> SparseMatrix:
        """A constant matrix from a symmetric scipy sparse (or dense NumPy) matrix.

        The structural pattern of ``A`` is kept (explicit zeros included) and every
        diagonal entry is stored.  Raises ``ValueError`` if ``A`` is not square, not
        symmetric, or holds NaN/inf.
        """
        A = _check_symmetric_scipy(A, name)
        pattern, data = SparsityPattern.from_scipy(A)
        return cls(pattern, pt.constant(data))

    @classmethod
    def from_pattern(cls, pattern: SparsityPattern, data) -> SparseMatrix:
        """A matrix from a pattern and a (symbolic) vector of values."""
        return cls(pattern, data)

    @classmethod
    def identity(cls, n: int) -> SparseMatrix:
        """The ``n x n`` identity."""
        return cls.from_scipy(sp.identity(n, format="csc"))

    # -- properties -------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Matrix order."""
        return self.pattern.n

    @property
    def nnz(self) -> int:
        """Number of stored (lower-triangle) values."""
        return self.pattern.nnz

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.pattern.n, self.pattern.n)

    @property
    def T(self) -> SparseMatrix:
        """The transpose, which is the matrix itself."""
        return self

    def diagonal(self):
        """The diagonal as a symbolic vector (zeros where not stored)."""
        idx = self.pattern.diag_index
        if np.all(idx >= 0):
            return self.data[const_index(idx)]
        out = pt.zeros(self.n, dtype="float64")
        present = np.flatnonzero(idx >= 0)
        return pt.set_subtensor(out[const_index(present)], self.data[const_index(idx[present])])

    def __repr__(self) -> str:
        return f"SparseMatrix(n={self.n}, nnz={self.nnz})"

    # -- arithmetic ---------------------------------------------------------------------
    def _scalar(self, c):
        c = pt.as_tensor_variable(c if isinstance(c, Variable) else np.float64(c))
        if c.type.ndim != 0:
            raise TypeError(
                f"A SparseMatrix can only be scaled by a scalar, got {c.type}. Use "
                "add_diagonal for a vector on the diagonal."
            )
        return c

    def __mul__(self, c) -> SparseMatrix:
        if isinstance(c, SparseMatrix):
            raise TypeError("Elementwise product of two SparseMatrix objects is not supported.")
        return SparseMatrix(self.pattern, self.data * self._scalar(c))

    __rmul__ = __mul__

    def __truediv__(self, c) -> SparseMatrix:
        return SparseMatrix(self.pattern, self.data / self._scalar(c))

    def __neg__(self) -> SparseMatrix:
        return SparseMatrix(self.pattern, -self.data)

    def __add__(self, other) -> SparseMatrix:
        other = as_sparse_matrix(other, n=self.n)
        if other.n != self.n:
            raise ValueError(f"Cannot add matrices of order {self.n} and {other.n}.")
        if other.pattern == self.pattern:
            return SparseMatrix(self.pattern, self.data + other.data)
        union, ia, ib = self.pattern.union(other.pattern)
        z = pt.zeros(union.nnz, dtype="float64")
        # Index maps are injective, so increments are plain scatters (gradient: gathers).
        z = pt.inc_subtensor(z[const_index(ia)], self.data)
        z = pt.inc_subtensor(z[const_index(ib)], other.data)
        return SparseMatrix(union, z)

    __radd__ = __add__

    def __sub__(self, other) -> SparseMatrix:
        return self + (-as_sparse_matrix(other, n=self.n))

    def __rsub__(self, other) -> SparseMatrix:
        return as_sparse_matrix(other, n=self.n) + (-self)

    def add_diagonal(self, d) -> SparseMatrix:
        """``self + diag(d)`` for a scalar or length-``n`` vector ``d``."""
        d = pt.as_tensor_variable(d if isinstance(d, Variable) else np.asarray(d, np.float64))
        if d.type.ndim == 0:
            # An elementwise product with a constant vector rather than Alloc: PyTensor's
            # JAX backend mishandles Alloc'd constants inside second-order graphs.
            d = d * pt.constant(np.ones(self.n))
        elif d.type.ndim != 1:
            raise TypeError(f"The diagonal must be a scalar or vector, got {d.type}.")
        pat = SparsityPattern(self.n, np.arange(self.n + 1), np.arange(self.n))
        return self + SparseMatrix(pat, d)

    # -- products --------------------------------------------------------------------
    def __matmul__(self, x):
        """``Q @ x`` for a vector or an ``(n, k)`` matrix ``x``, O(nnz) and differentiable.

        One fused pass over the stored values (:class:`~pymc_sparse.ops.quadform.SparseMatVec`);
        ``x`` of another length than ``n`` raises ``ValueError`` (when the graph is built if
        its length is static, else when it runs).
        """
        x = pt.as_tensor_variable(x)
        if x.type.ndim not in (1, 2):
            raise TypeError(f"Q @ x needs a vector or a matrix, got {x.type}.")
        return matvec(self.pattern, self.data, x)

    def dot(self, x):
        """Alias of ``self @ x``."""
        return self @ x

    def quad_form(self, x, y=None):
        r"""``x' Q y`` (``y = x`` by default), one fused pass over the stored values.

        For ``y = x`` this is :math:`\sum_e w_e q_e x_{r_e} x_{c_e}` with :math:`w_e = 1`
        on the diagonal and 2 off it, computed with :math:`Qx` (which the gradient reuses)
        by :class:`~pymc_sparse.ops.quadform.SparseQuadForm`.  A matrix ``x`` of shape
        ``(n, k)`` gives ``k`` quadratic forms, one per column.  Vectors of another length
        than ``n`` raise ``ValueError``.
        """
        x = pt.as_tensor_variable(x)
        if x.type.ndim not in (1, 2):
            raise TypeError(f"quad_form needs a vector or a matrix, got {x.type}.")
        if y is None:
            return quad_form(self.pattern, self.data, x)
        y = pt.as_tensor_variable(y)
        m = _static_length(x)
        if m is not None and m != self.n:
            raise ValueError(f"`x` has length {m} but the matrix is {self.n} x {self.n}.")
        return pt.sum(x * (self @ y), axis=0)

    def to_scipy(self, data=None) -> sp.csc_matrix:
        """The full symmetric scipy matrix, evaluating ``data`` if no values are given."""
        if data is None:
            data = self.data.eval() if not isinstance(self.data, Constant) else self.data.data
        return self.pattern.to_scipy(data)


def as_sparse_matrix(A, n: int | None = None) -> SparseMatrix:
    """Convert a SparseMatrix, scipy sparse matrix or dense symmetric array to SparseMatrix."""
    if isinstance(A, SparseMatrix):
        return A
    if sp.issparse(A) or isinstance(A, np.ndarray):
        return SparseMatrix.from_scipy(A)
    if isinstance(A, Variable):
        raise TypeError(
            "A symbolic dense or pytensor.sparse matrix cannot be used here: its pattern is "
            "not static. Build a pms.SparseMatrix(pattern, values) instead."
        )
    raise TypeError(f"Cannot interpret {type(A).__name__} as a sparse symmetric matrix.")


def as_constant_pattern_data(Q) -> tuple[SparsityPattern, np.ndarray]:
    """Pattern and numeric values of a constant matrix (scipy, NumPy, or SparseMatrix)."""
    if isinstance(Q, SparseMatrix):
        if isinstance(Q.data, Constant):
            data = np.asarray(Q.data.data, dtype=np.float64)
        else:
            try:
                data = np.asarray(Q.data.eval(), dtype=np.float64)
            except Exception as err:
                raise TypeError(
                    "This helper needs numeric values, but the SparseMatrix depends on free "
                    "random variables; evaluate it at a point first."
                ) from err
        return Q.pattern, data
    A = _check_symmetric_scipy(Q)
    return SparsityPattern.from_scipy(A)


def kron(A, B) -> SparseMatrix:
    r"""Kronecker product :math:`A \otimes B` of two symmetric sparse matrices.

    Node ``(a, b)`` of the product has index ``a * B.n + b`` (B varies fastest), as in
    ``scipy.sparse.kron``.  Values are products of gathered values of ``A`` and ``B``,
    so the result is differentiable in both.
    """
    A = as_sparse_matrix(A)
    B = as_sparse_matrix(B)

    def full(p: SparsityPattern):
        off = np.flatnonzero(~p.is_diag)
        rows = np.concatenate([p.rows, p.cols[off]])
        cols = np.concatenate([p.cols, p.rows[off]])
        src = np.concatenate([np.arange(p.nnz), off])
        return rows, cols, src

    ra, ca, sa = full(A.pattern)
    rb, cb, sb = full(B.pattern)
    nb = B.n
    R = (ra[:, None] * nb + rb[None, :]).ravel()
    C = (ca[:, None] * nb + cb[None, :]).ravel()
    SA = np.repeat(sa, rb.size)
    SB = np.tile(sb, ra.size)
    keep = R >= C
    R, C, SA, SB = R[keep], C[keep], SA[keep], SB[keep]
    n = A.n * nb
    order = np.lexsort((R, C))
    R, C, SA, SB = R[order], C[order], SA[order], SB[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, C + 1, 1)
    pat = SparsityPattern(n, np.cumsum(indptr), R)
    vals = A.data[const_index(SA)] * B.data[const_index(SB)]
    if not pat.has_full_diagonal:
        return SparseMatrix(pat, vals).add_diagonal(0.0)
    return SparseMatrix(pat, vals)
