r"""Adjacency-matrix checks and connected components.

Every areal model starts from a neighbourhood matrix :math:`W` (``W[i, j] > 0`` when
areas ``i`` and ``j`` are neighbours, the value being the weight).  The checks below run
once, when a model is built, and name the first offending entry so that the user can fix
the data rather than chase a NaN during sampling.
"""

from __future__ import annotations

import numpy as np
import pytensor.sparse as ps
import pytensor.tensor as pt
import scipy.sparse as sp
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.raise_op import CheckAndRaise
from pytensor.tensor.random.op import RandomVariable

try:  # pytensor >= 2.30 moved the graph walkers
    from pytensor.graph.traversal import ancestors as _ancestors
    from pytensor.graph.traversal import graph_inputs as _graph_inputs
except ImportError:  # pragma: no cover - older pytensor
    from pytensor.graph.basic import ancestors as _ancestors
    from pytensor.graph.basic import graph_inputs as _graph_inputs

from pymc_sparse.linalg.graph import components
from pymc_sparse.linalg.validate import as_csc_float64, symmetric_csc

__all__ = [
    "AdjacencyChangedError",
    "connected_components",
    "degrees",
    "guard_adjacency",
    "isolated_nodes",
    "read_adjacency",
    "validate_adjacency",
]


class AdjacencyChangedError(ValueError):
    """Raised when a shared ``W`` (``pm.Data``) no longer holds its build-time value."""


def read_adjacency(W, name: str = "W"):
    """Return the value of ``W`` at build time and, if it can change later, its variable.

    Accepts what ``pm.CAR``/``pm.ICAR`` accept: a NumPy array, a scipy sparse matrix, a
    PyTensor constant (dense or ``pytensor.sparse``), a shared variable (``pm.Data``,
    ``pytensor.shared``, ``pytensor.sparse.shared``), or any expression of constants and
    shared variables.  The sparsity pattern is fixed when the model is built, so the value
    is read now.

    Returns
    -------
    value : ndarray or scipy.sparse matrix
        The numeric value of ``W`` now.
    source : Variable or None
        ``W`` itself when it depends on a shared variable (its value can be changed with
        ``pm.set_data``), else None; pass it to :func:`guard_adjacency`.

    Raises
    ------
    TypeError
        When ``W`` depends on a free variable (a random variable or an input), whose
        value, and hence the sparsity pattern, is unknown when the model is built.
    """
    if isinstance(W, SharedVariable):
        return W.get_value(borrow=False), W
    if isinstance(W, Constant):
        return W.data, None
    if not isinstance(W, Variable):
        return W, None
    roots = list(_graph_inputs([W]))
    free = [v for v in roots if not isinstance(v, Constant | SharedVariable)]
    # A random variable's inputs are constants and a shared RNG, but its value is not fixed.
    free += [
        v for v in _ancestors([W]) if v.owner is not None and isinstance(v.owner.op, RandomVariable)
    ]
    if free:
        raise TypeError(
            f"`{name}` must be a constant (NumPy array, scipy.sparse matrix, PyTensor constant) "
            f"or depend only on shared variables (pm.Data), got the symbolic {W.type} that "
            f"depends on {free[0]!r}. Its sparsity pattern must be known when the model is "
            "built; for a precision whose values depend on random variables use "
            "SparseGMRF(Q=...) with a builder of pymc_sparse.precision."
        )
    value = W.eval()
    shared = any(isinstance(v, SharedVariable) for v in roots)
    return value, (W if shared else None)


def _same_array(x, x0: np.ndarray):
    """Symbolic exact equality of a vector with a constant, ``False`` on a length mismatch."""
    c = pt.constant(x0)
    k0 = x0.shape[0]
    # Both slices have length min(len(x), k0), so a length mismatch never raises here.
    same = pt.all(pt.eq(x[:k0], c[: x.shape[0]])) if k0 else pt.as_tensor(True)
    return pt.eq(x.shape[0], k0) & same


def _unchanged(source, value) -> Variable:
    """Symbolic ``True`` iff ``source`` still equals ``value``.

    A sparse ``W`` compares its stored arrays (data, indices, indptr) with the build-time
    ones: O(nnz).  A dense ``W`` gathers the build-time non-zeros from the current value
    and counts the current non-zeros, which rules out changed weights, removed and new
    edges; the count reads all n^2 entries, so pass a sparse ``W`` for large graphs.
    """
    if isinstance(source.type, ps.SparseTensorType):
        v = sp.csr_matrix(value) if source.type.format == "csr" else sp.csc_matrix(value)
        data, indices, indptr, shape = ps.csm_properties(source)
        return (
            _same_array(shape, np.asarray(v.shape, dtype=np.int32))
            & _same_array(indptr, np.asarray(v.indptr, dtype=np.int32))
            & _same_array(indices, np.asarray(v.indices, dtype=np.int32))
            & _same_array(pt.cast(data, "float64"), np.asarray(v.data, dtype=np.float64))
        )
    coo = sp.coo_matrix(value)
    coo.sum_duplicates()
    coo.eliminate_zeros()
    n0, m0 = coo.shape
    W = pt.as_tensor_variable(source)
    nr, nc = W.shape[0], W.shape[1]
    # Clip the indices so that a smaller matrix gives "changed", not an IndexError.
    rows = pt.minimum(pt.constant(coo.row.astype(np.int64)), pt.maximum(nr - 1, 0))
    cols = pt.minimum(pt.constant(coo.col.astype(np.int64)), pt.maximum(nc - 1, 0))
    got = pt.cast(W[rows, cols], "float64")
    same_values = pt.all(pt.eq(got, coo.data.astype(np.float64))) if coo.nnz else True
    count = pt.sum(pt.neq(W, 0))
    return pt.eq(nr, n0) & pt.eq(nc, m0) & pt.eq(count, coo.nnz) & same_values


def guard_adjacency(x, source, value, name: str = "W"):
    """Make ``x`` raise :class:`AdjacencyChangedError` once a shared ``W`` changes.

    The distributions fix ``W`` (its pattern and values) when the model is built.  A
    ``pm.set_data`` on a shared ``W`` afterwards would otherwise be ignored silently, so
    every graph that uses ``x`` (the log-density and the random draws) checks that the
    shared value is still the build-time one and stops with this error if not.

    Parameters
    ----------
    x : TensorVariable
        A parameter of the distribution, e.g. ``mu`` or ``sigma``.
    source, value
        As returned by :func:`read_adjacency`; ``source=None`` returns ``x`` unchanged.
    name : str
        Name used in the error message.
    """
    if source is None:
        return x
    msg = (
        f"`{name}` (a shared variable, e.g. pm.Data) has changed since the model was built. "
        "pymc_sparse reads W once, when the distribution is created (its sparsity pattern "
        "fixes the sparse factorisation), so the model would still use the old W. Rebuild "
        "the model (create the distribution again) after pm.set_data on W."
    )
    check = CheckAndRaise(AdjacencyChangedError, msg)
    return check(pt.as_tensor_variable(x), _unchanged(source, value))


def _to_scipy(W, name: str) -> sp.csc_matrix:
    value, _ = read_adjacency(W, name)
    return as_csc_float64(value, name)


def validate_adjacency(W, name: str = "W", *, rtol: float = 1e-12) -> sp.csc_matrix:
    r"""Check a neighbourhood (adjacency) matrix and return it as scipy CSC float64.

    A valid :math:`W` is square, finite, non-negative, has a zero diagonal (no
    self-loops) and is symmetric (up to ``rtol`` times its largest entry; the result is
    then exactly symmetrised as :math:`(W + W^\top)/2`).  Binary and weighted matrices are
    both accepted.  Explicit zeros are dropped, so the returned pattern is the edge set.

    Parameters
    ----------
    W : array_like or scipy.sparse matrix
        Dense NumPy array, scipy sparse matrix, PyTensor constant (dense or sparse) or
        shared variable (read now, see :func:`read_adjacency`).
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
        For non-numeric input, or symbolic input that depends on a free variable.
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
