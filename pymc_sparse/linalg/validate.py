r"""The one check of a constant symmetric matrix, used by every entry point.

Symmetry is judged entry by entry, never against the largest entry of the matrix: a pair
is asymmetric when

.. math:: |a_{ij} - a_{ji}| > \mathrm{rtol}\,\max(|a_{ij}|, |a_{ji}|)
          + 64\,\varepsilon \sqrt{|a_{ii}\, a_{jj}|},

the first term the pair's own scale, the second the rounding floor at which an
off-diagonal entry can matter to a positive-definite matrix
(:math:`|a_{ij}| \le \sqrt{a_{ii} a_{jj}}`).  A tolerance relative to
:math:`\max|A|` would let ``Q[0, 1] = -0.5, Q[1, 0] = -0.6`` pass next to
``Q[0, 0] = 1e12`` and silently use the lower triangle.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["as_csc_float64", "design_csr", "symmetric_csc"]

_EPS = np.finfo(np.float64).eps


def as_csc_float64(A, name: str = "Q") -> sp.csc_matrix:
    """Return ``A`` (NumPy array or scipy sparse) as a square, real, finite float64 CSC copy.

    Raises
    ------
    TypeError
        Complex, object or non-numeric input.
    ValueError
        Not 2-D, not square, or NaN/inf entries (the first ones are named).
    """
    if sp.issparse(A):
        if A.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D matrix, got ndim={A.ndim}.")
        A = sp.csc_matrix(A)
    else:
        arr = np.asarray(A)
        if arr.dtype == object:
            raise TypeError(f"`{name}` must be a numeric matrix, got an object array.")
        if arr.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D matrix, got shape {arr.shape}.")
        A = sp.csc_matrix(arr)
    if A.dtype.kind == "c":
        raise TypeError(f"`{name}` must be real, got dtype {A.dtype}.")
    if A.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold real numbers, got dtype {A.dtype}.")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"`{name}` must be square, got shape {A.shape}.")
    A = A.astype(np.float64)
    A.sum_duplicates()
    if not np.all(np.isfinite(A.data)):
        coo = A.tocoo()
        k = int(np.flatnonzero(~np.isfinite(coo.data))[0])
        raise ValueError(
            f"`{name}` has a non-finite entry: {name}[{coo.row[k]}, {coo.col[k]}] = "
            f"{coo.data[k]}. Replace NaN/inf values before building the model."
        )
    return A


def _one_triangle(A: sp.csc_matrix) -> bool:
    coo = A.tocoo()
    off = coo.row != coo.col
    if not off.any():
        return False
    nz = coo.data[off] != 0
    lower = coo.row[off][nz] > coo.col[off][nz]
    return bool(nz.any() and (lower.all() or (~lower).all()))


def symmetric_csc(
    A, name: str = "Q", *, rtol: float = 1e-10, hint: str = "", symmetrise: bool = False
) -> sp.csc_matrix:
    r"""Check that ``A`` is symmetric entry by entry and return it as float64 CSC.

    Parameters
    ----------
    A : array_like or scipy.sparse matrix
    name : str
        Name used in error messages.
    rtol : float
        Relative tolerance of each pair against its own scale (see the module notes).
    hint : str
        Appended to the asymmetry error (what symmetrising means for this input).
    symmetrise : bool
        Return :math:`(A + A^\top)/2` (pairs equal to rounding become exactly equal).

    Raises
    ------
    ValueError
        Naming the worst pair.  A matrix with only one triangle stored is recognised and
        the fix given: ``A + A.T - diag(A)`` (``(A + A.T) / 2`` would halve the
        off-diagonal entries).
    """
    A = as_csc_float64(A, name)
    diff = (A - A.T).tocoo()
    diff.eliminate_zeros()
    if diff.nnz:
        i, j = diff.row, diff.col
        aij = np.asarray(A[i, j]).ravel()
        aji = np.asarray(A[j, i]).ravel()
        d = np.abs(A.diagonal())
        tol = rtol * np.maximum(np.abs(aij), np.abs(aji)) + 64 * _EPS * np.sqrt(d[i] * d[j])
        excess = np.abs(diff.data) - tol
        k = int(np.argmax(excess))
        if excess[k] > 0:
            if _one_triangle(A):
                raise ValueError(
                    f"`{name}` is not symmetric: only one triangle is stored. Pass the full matrix "
                    f"{name} + {name}.T - scipy.sparse.diags({name}.diagonal()) (not "
                    f"({name} + {name}.T) / 2, which halves the off-diagonal entries)."
                )
            r, c = int(i[k]), int(j[k])
            raise ValueError(
                f"`{name}` is not symmetric: {name}[{r}, {c}] = {float(aij[k])!r} but "
                f"{name}[{c}, {r}] = {float(aji[k])!r}. {hint}".rstrip()
            )
        if symmetrise:
            A = ((A + A.T) * 0.5).tocsc()
    A.sort_indices()
    return A


def design_csr(A, n: int, *, model: str = "y = A x + noise") -> sp.csr_matrix:
    """Return an observation matrix ``A`` (``(m, n)``) as a finite float64 CSR copy.

    ``None`` is the identity (every node observed once).  The one check of a design
    matrix: :class:`~pymc_sparse.ObservationMatrix` and the Laplace structure call it.
    """
    n = int(n)
    if A is None:
        return sp.identity(n, format="csr", dtype=np.float64)
    if isinstance(A, np.ndarray):
        if A.ndim != 2:
            raise ValueError(f"`A` must be a 2-D (m, n) matrix, got shape {A.shape}.")
        A = sp.csr_matrix(A)
    if not sp.issparse(A):
        raise TypeError(
            f"`A` must be a constant scipy.sparse matrix (or NumPy array), got "
            f"{type(A).__name__}. A symbolic design is not supported: its pattern must be "
            "known when the graph is built."
        )
    if A.dtype.kind == "c":
        raise TypeError(f"`A` must be real, got dtype {A.dtype}.")
    A = sp.csr_matrix(A, dtype=np.float64, copy=True)
    if A.shape[1] != n:
        raise ValueError(
            f"`A` has {A.shape[1]} columns but the latent field has n = {n} nodes; A must "
            f"be (m, n) with {model}."
        )
    if not np.all(np.isfinite(A.data)):
        raise ValueError("`A` contains NaN or infinite values.")
    A.sum_duplicates()
    A.sort_indices()
    return A
