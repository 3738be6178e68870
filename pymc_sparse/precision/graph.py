r"""Adjacency-matrix checks and connected components.

Every areal model starts from a neighbourhood matrix :math:`W` (``W[i, j] > 0`` when
areas ``i`` and ``j`` are neighbours, the value being the weight).  The checks below run
once, when a model is built, and name the first offending entry so that the user can fix
the data rather than chase a NaN during sampling.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pytensor.graph.basic import Constant, Variable

from pymc_sparse.linalg.graph import components
from pymc_sparse.linalg.validate import as_csc_float64, symmetric_csc

__all__ = ["connected_components", "degrees", "isolated_nodes", "validate_adjacency"]


def _to_scipy(W, name: str) -> sp.csc_matrix:
    if isinstance(W, Constant):
        W = W.data
    elif isinstance(W, Variable):
        raise TypeError(
            f"`{name}` must be a constant (NumPy array or scipy.sparse matrix), got the symbolic "
            f"{W.type}. Its sparsity pattern must be known when the model is built."
        )
    return as_csc_float64(W, name)


def validate_adjacency(W, name: str = "W", *, rtol: float = 1e-12) -> sp.csc_matrix:
    r"""Check a neighbourhood (adjacency) matrix and return it as scipy CSC float64.

    A valid :math:`W` is square, finite, non-negative, has a zero diagonal (no
    self-loops) and is symmetric (up to ``rtol`` times its largest entry; the result is
    then exactly symmetrised as :math:`(W + W^\top)/2`).  Binary and weighted matrices are
    both accepted.  Explicit zeros are dropped, so the returned pattern is the edge set.

    Parameters
    ----------
    W : array_like or scipy.sparse matrix
        Dense NumPy array, scipy sparse matrix or PyTensor constant.
    name : str
        Name used in error messages.
    rtol : float
        Relative tolerance of the symmetry check.

    Returns
    -------
    scipy.sparse.csc_matrix
        Symmetric, float64, sorted indices, no stored zeros.

    Raises
    ------
    ValueError
        Naming the first bad entry: not square, NaN/inf, negative weight, self-loop, or
        asymmetric pair.
    TypeError
        For symbolic or non-numeric input.
    """
    A = _to_scipy(W, name)
    if A.shape[0] < 1:
        raise ValueError(f"`{name}` is empty.")
    A.sum_duplicates()
    coo = A.tocoo()
    bad = ~np.isfinite(coo.data)
    if bad.any():
        k = np.flatnonzero(bad)[0]
        raise ValueError(
            f"`{name}` has a non-finite entry: {name}[{coo.row[k]}, {coo.col[k]}] = {coo.data[k]}. "
            "Adjacency weights must be finite."
        )
    neg = coo.data < 0
    if neg.any():
        k = np.flatnonzero(neg)[0]
        raise ValueError(
            f"`{name}` has a negative weight: {name}[{coo.row[k]}, {coo.col[k]}] = "
            f"{coo.data[k]}. Adjacency weights must be >= 0."
        )
    loop = (coo.row == coo.col) & (coo.data != 0)
    if loop.any():
        k = np.flatnonzero(loop)[0]
        raise ValueError(
            f"`{name}` has a self-loop: {name}[{coo.row[k]}, {coo.col[k]}] = {coo.data[k]}. "
            "The diagonal of an adjacency matrix must be zero (set it with W.setdiag(0))."
        )
    A.eliminate_zeros()
    A = symmetric_csc(
        A,
        name,
        rtol=rtol,
        symmetrise=True,
        hint="Neighbourhood relations must be mutual; symmetrise W (e.g. W.maximum(W.T)) "
        "if the data lists each edge once.",
    )
    return A


def degrees(W) -> np.ndarray:
    r"""Weighted degree :math:`d_i = \sum_j W_{ij}` of each node of a validated ``W``."""
    return np.asarray(sp.csc_matrix(W).sum(axis=1)).ravel()


def connected_components(W) -> tuple[int, np.ndarray]:
    """Find the connected components of the graph of a symmetric adjacency matrix.

    Parameters
    ----------
    W : array_like or scipy.sparse matrix
        Validated with :func:`validate_adjacency`.

    Returns
    -------
    n_components : int
    labels : ndarray of int, shape (n,)
        Component of each node, numbered ``0 .. n_components - 1`` in order of first
        appearance, so node 0 is always in component 0.
    """
    return components(validate_adjacency(W))


def isolated_nodes(W) -> np.ndarray:
    """Return the indices of nodes without neighbours (zero degree)."""
    A = validate_adjacency(W)
    return np.flatnonzero(np.diff(A.indptr) == 0)
