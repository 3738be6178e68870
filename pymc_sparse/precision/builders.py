r"""Precision matrices of common Gaussian Markov random fields.

Each builder returns a symmetric ``scipy.sparse.csc_matrix`` when its parameters are
numbers, and a :class:`~pymc_sparse.ops.matrix.SparseMatrix` (static pattern, symbolic
values) when a parameter is a PyTensor variable such as a PyMC random variable, so the
same call builds a constant structure matrix or the precision of a hierarchical model:

>>> import pymc as pm, pymc_sparse as pms
>>> W = pms.precision.lattice_adjacency(10, 10)
>>> with pm.Model():
...     alpha = pm.Uniform("alpha", 0, 1)
...     Q = pms.precision.car_precision(W, alpha, tau=2.0)   # SparseMatrix
>>> Q
SparseMatrix(n=100, nnz=280)

A parameter-dependent precision is a sum :math:`\sum_k \theta_k Q_k` of constant
matrices with scalar coefficients, built by :func:`linear_combination` on the union of the
patterns (computed once).

References
----------
.. [1] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields: Theory and
   Applications*. Chapman & Hall/CRC, ch. 3.
.. [2] Leroux, B. G., Lei, X. and Breslow, N. (2000). Estimation of disease rates in small
   areas: a new mixed model for spatial dependence. In *Statistical Models in
   Epidemiology, the Environment, and Clinical Trials*, 179-191. Springer.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import scipy.sparse as sp
from pytensor.graph.basic import Constant, Variable

from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops.matrix import SparseMatrix, as_sparse_matrix
from pymc_sparse.precision.graph import degrees, validate_adjacency

__all__ = [
    "ar1_precision",
    "car_precision",
    "icar_precision",
    "lattice_adjacency",
    "leroux_precision",
    "linear_combination",
    "proper_besag_precision",
    "rw1",
    "rw2",
]


# -- helpers ----------------------------------------------------------------------------
def _numeric(x):
    """Return the float value of a constant scalar, or None if it is symbolic."""
    if isinstance(x, Constant):
        x = x.data
    elif isinstance(x, Variable):
        return None
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 0:
        raise TypeError(f"Expected a scalar parameter, got an array of shape {arr.shape}.")
    return float(arr)


def _check_open_interval(value, lo, hi, what: str, why: str = ""):
    if value is not None and not (lo < value < hi):
        raise ValueError(f"`{what}` must lie in ({lo}, {hi}), got {value}.{why}")


def _check_positive(value, what: str):
    if value is not None and not value > 0:
        raise ValueError(f"`{what}` must be > 0, got {value}.")


def linear_combination(coefficients, matrices) -> SparseMatrix:
    r"""Build the symmetric sparse matrix :math:`\sum_k \theta_k Q_k`.

    Parameters
    ----------
    coefficients : sequence of scalars
        :math:`\theta_k`: numbers or PyTensor scalars (e.g. random variables).
    matrices : sequence of scipy.sparse matrices, dense arrays or SparseMatrix
        :math:`Q_k`, each symmetric and of the same order.

    Returns
    -------
    SparseMatrix
        On the union of the patterns (built once, with every diagonal entry stored);
        its values are :math:`\sum_k \theta_k q^{(k)}` scattered into that pattern, so the
        result costs :math:`O(\sum_k \mathrm{nnz}(Q_k))` and is differentiable in every
        :math:`\theta_k`.
    """
    coefficients = list(coefficients)
    matrices = [as_sparse_matrix(M) for M in matrices]
    if len(coefficients) != len(matrices) or not matrices:
        raise ValueError(
            f"Need one coefficient per matrix, got {len(coefficients)} coefficients and "
            f"{len(matrices)} matrices."
        )
    n = matrices[0].n
    for k, M in enumerate(matrices):
        if M.n != n:
            raise ValueError(f"matrices[{k}] has order {M.n} but matrices[0] has order {n}.")
    keys = np.unique(np.concatenate([M.pattern.cols * n + M.pattern.rows for M in matrices]))
    keys = np.union1d(keys, np.arange(n) * n + np.arange(n))
    c, r = np.divmod(keys, n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, c + 1, 1)
    union = SparsityPattern(n, np.cumsum(indptr), r)
    out = pt.zeros(union.nnz, dtype="float64")
    for theta, M in zip(coefficients, matrices, strict=True):
        theta = pt.as_tensor_variable(theta)
        if theta.type.ndim != 0:
            raise TypeError(f"Coefficients must be scalars, got {theta.type}.")
        idx = union.index_of(M.pattern.rows, M.pattern.cols)
        out = pt.inc_subtensor(out[idx], pt.cast(theta, "float64") * M.data)
    return SparseMatrix(union, out)


# -- areal models -----------------------------------------------------------------------
def icar_precision(W) -> sp.csc_matrix:
    r"""Structure matrix :math:`R = D - W` of the intrinsic CAR (Besag) model.

    :math:`D = \operatorname{diag}(d_i)`, :math:`d_i = \sum_j W_{ij}`.  :math:`R` is
    singular with one zero eigenvalue per connected component (a node without
    neighbours gives a zero row).
    """
    W = validate_adjacency(W)
    return (sp.diags(degrees(W)) - W).tocsc()


def car_precision(W, alpha, tau=1.0):
    r"""Proper CAR precision :math:`Q = \tau (D - \alpha W)` (Cressie 1993; as ``pm.CAR``).

    Positive definite for :math:`-1 < \alpha < 1` and :math:`\tau > 0` when every node has
    a neighbour.  Returns scipy CSC for numeric ``alpha, tau`` and a SparseMatrix if
    either is symbolic.
    """
    W = validate_adjacency(W)
    _check_open_interval(_numeric(alpha), -1, 1, "alpha")
    _check_positive(_numeric(tau), "tau")
    D = sp.diags(degrees(W)).tocsc()
    if _numeric(alpha) is not None and _numeric(tau) is not None:
        return (_numeric(tau) * (D - _numeric(alpha) * W)).tocsc()
    tau = pt.as_tensor_variable(tau)
    return linear_combination([tau, -tau * alpha], [D, W])


def leroux_precision(W, rho, tau=1.0):
    r"""Leroux et al. (2000) precision :math:`Q = \tau\{(1-\rho) I + \rho (D - W)\}`.

    Interpolates iid (:math:`\rho = 0`) and ICAR (:math:`\rho = 1`); proper for
    :math:`0 \le \rho < 1`.
    """
    W = validate_adjacency(W)
    r = _numeric(rho)
    if r is not None and not (0 <= r < 1):
        raise ValueError(f"`rho` must lie in [0, 1), got {r}.")
    _check_positive(_numeric(tau), "tau")
    n = W.shape[0]
    eye = sp.identity(n, format="csc")
    R = icar_precision(W)
    if r is not None and _numeric(tau) is not None:
        return (_numeric(tau) * ((1 - r) * eye + r * R)).tocsc()
    tau = pt.as_tensor_variable(tau)
    return linear_combination([tau * (1 - rho), tau * rho], [eye, R])


def proper_besag_precision(W, delta, tau=1.0):
    r"""Proper Besag precision :math:`Q = \tau (D + \delta I - W)`, :math:`\delta > 0`.

    R-INLA's ``besagproper``: the ICAR structure matrix made proper by a ridge.
    """
    W = validate_adjacency(W)
    _check_positive(_numeric(delta), "delta")
    _check_positive(_numeric(tau), "tau")
    R = icar_precision(W)
    eye = sp.identity(W.shape[0], format="csc")
    if _numeric(delta) is not None and _numeric(tau) is not None:
        return (_numeric(tau) * (R + _numeric(delta) * eye)).tocsc()
    tau = pt.as_tensor_variable(tau)
    return linear_combination([tau, tau * delta], [R, eye])


# -- time series --------------------------------------------------------------------------
def _difference_matrix(n: int, order: int, cyclic: bool) -> sp.csc_matrix:
    if cyclic:
        # Circulant first difference: (Dx)_i = x_{i+1} - x_i with index n = 0.
        D1 = (
            sp.diags([-np.ones(n), np.ones(n - 1)], [0, 1], shape=(n, n))
            + sp.coo_matrix(([1.0], ([n - 1], [0])), shape=(n, n))
        ).tocsc()
        D = D1
        for _ in range(order - 1):
            D = D1 @ D
        return D.tocsc()
    D = sp.identity(n, format="csc")
    for k in range(order):
        m = n - k
        D = sp.diags([-np.ones(m - 1), np.ones(m - 1)], [0, 1], shape=(m - 1, m)) @ D
    return D.tocsc()


def rw1(n: int, cyclic: bool = False) -> sp.csc_matrix:
    r"""Structure matrix of a first-order random walk, :math:`R = \Delta^\top \Delta`.

    :math:`\Delta` is the ``(n-1) x n`` first-difference matrix (``n x n`` circulant if
    ``cyclic``).  Rank :math:`n - 1` (one null vector, the constant).  Scale by a precision
    :math:`\tau` for the model :math:`x_{t+1} - x_t \sim N(0, \tau^{-1})`.
    """
    n = int(n)
    if n < (3 if cyclic else 2):
        raise ValueError(f"rw1 needs n >= {3 if cyclic else 2}, got n={n}.")
    D = _difference_matrix(n, 1, cyclic)
    return (D.T @ D).tocsc()


def rw2(n: int, cyclic: bool = False) -> sp.csc_matrix:
    r"""Structure matrix of a second-order random walk, :math:`R = \Delta_2^\top \Delta_2`.

    :math:`\Delta_2` takes second differences :math:`x_{t+2} - 2x_{t+1} + x_t`; interior
    rows of :math:`R` are :math:`(1, -4, 6, -4, 1)`.  Rank :math:`n - 2` (constant and
    linear trend are in the null space), or :math:`n - 1` if ``cyclic``.
    """
    n = int(n)
    if n < (5 if cyclic else 3):
        raise ValueError(f"rw2 needs n >= {5 if cyclic else 3}, got n={n}.")
    D = _difference_matrix(n, 2, cyclic)
    return (D.T @ D).tocsc()


def ar1_precision(n: int, rho, *, unit_marginal: bool = False):
    r"""Precision of a stationary AR(1) process :math:`x_t = \rho x_{t-1} + \epsilon_t`.

    With unit innovation variance the precision is tridiagonal,

    .. math:: Q = \begin{pmatrix} 1 & -\rho \\ -\rho & 1+\rho^2 & -\rho \\ & \ddots &
              \ddots & \ddots \\ && -\rho & 1 \end{pmatrix},

    and the marginal variance is :math:`1/(1-\rho^2)`; ``unit_marginal=True`` returns
    :math:`Q / (1-\rho^2)`, whose marginal variance is 1 (R-INLA's ``ar1``
    parameterisation).  Needs :math:`|\rho| < 1`.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"ar1_precision needs n >= 2, got n={n}.")
    r = _numeric(rho)
    _check_open_interval(r, -1, 1, "rho", " A stationary AR(1) needs |rho| < 1.")
    A0 = sp.identity(n, format="csc")
    A1 = sp.diags([-np.ones(n - 1), -np.ones(n - 1)], [-1, 1], shape=(n, n)).tocsc()
    d2 = np.ones(n)
    d2[[0, -1]] = 0.0
    A2 = sp.diags(d2).tocsc()
    if r is not None:
        Q = (A0 + r * A1 + r * r * A2).tocsc()
        return (Q / (1 - r * r)).tocsc() if unit_marginal else Q
    rho = pt.as_tensor_variable(rho)
    c = 1.0 / (1.0 - rho**2) if unit_marginal else pt.constant(1.0)
    return linear_combination([c, c * rho, c * rho**2], [A0, A1, A2])


# -- lattices -------------------------------------------------------------------------------
def lattice_adjacency(nx: int, ny: int | None = None, *, queen: bool = False) -> sp.csc_matrix:
    """Binary adjacency of an ``nx x ny`` lattice; node ``(i, j)`` has index ``i * ny + j``.

    Rook neighbours (4) by default, queen neighbours (8, diagonals included) if ``queen``.
    """
    nx = int(nx)
    ny = nx if ny is None else int(ny)
    if nx < 1 or ny < 1:
        raise ValueError(f"Lattice dimensions must be >= 1, got ({nx}, {ny}).")

    def path(m):
        return sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1], shape=(m, m), format="csc")

    Tx, Ty = path(nx), path(ny)
    Ix, Iy = sp.identity(nx, format="csc"), sp.identity(ny, format="csc")
    W = sp.kron(Tx, Iy) + sp.kron(Ix, Ty)
    if queen:
        W = W + sp.kron(Tx, Ty)
    W = sp.csc_matrix(W)
    W.sort_indices()
    return W
