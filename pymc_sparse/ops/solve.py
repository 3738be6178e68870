r"""Sparse solve Op."""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymc_sparse.linalg.host import host_solve
from pymc_sparse.ops._base import (
    as_data,
    check_pattern,
    lower_pair_product,
    runtime_data,
    unpack,
)

__all__ = ["SparseSolve", "solve"]


class SparseSolve(Op):
    r"""Solve :math:`Q x = b` for symmetric positive-definite sparse :math:`Q`.

    Inputs: ``data`` (stored values of :math:`Q`) and ``b`` (a vector or an
    ``(n, k)`` matrix); output ``x`` with the shape of ``b``, NaN-filled when :math:`Q`
    is not positive definite.

    Derivatives: from :math:`dx = Q^{-1}(db - dQ\,x)`, with cotangent :math:`\bar x`
    and :math:`\bar b = Q^{-1}\bar x` (one more solve with the cached factor),

    .. math:: \frac{\partial \ell}{\partial b} = \bar b, \qquad
              \frac{\partial \ell}{\partial q_e} = -(\bar b_i x_j + \bar b_j x_i)
              \ (i \ne j), \qquad -\bar b_i x_i\ (i = j),

    for a stored value :math:`q_e` at :math:`(i, j)`: only entries on the pattern are
    formed, never the dense outer product :math:`\bar b x^\top`.

    References
    ----------
    .. [1] Giles, M. (2008). Collected matrix derivative results for forward and reverse
       mode algorithmic differentiation. LNCSE 64, 35-44.
    """

    __props__ = ("pattern",)

    def __init__(self, pattern):
        self.pattern = check_pattern(pattern)

    def make_node(self, data, b):
        data = as_data(self.pattern, data)
        b = pt.as_tensor_variable(b)
        if b.type.ndim not in (1, 2):
            raise TypeError(f"`b` must be a vector or an (n, k) matrix, got {b.type}.")
        if b.type.shape[0] is not None and b.type.shape[0] != self.pattern.n:
            raise ValueError(
                f"`b` has {b.type.shape[0]} rows but Q is {self.pattern.n} x {self.pattern.n}."
            )
        if b.type.dtype != "float64":
            b = pt.cast(b, "float64")
        return Apply(self, [data, b], [b.type()])

    def perform(self, node, inputs, outputs):
        data, b = inputs
        data = runtime_data(self.pattern, data)
        if b.shape[0] != self.pattern.n:
            raise ValueError(
                f"`b` has {b.shape[0]} rows but Q is {self.pattern.n} x {self.pattern.n}."
            )
        outputs[0][0] = host_solve(self.pattern, data, b)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1]]

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        data, _ = inputs
        (x,) = outputs
        bbar = self(data, output_grads[0])
        return [-lower_pair_product(self.pattern, bbar, x), bbar]


def solve(Q, b):
    r"""Symbolic :math:`Q^{-1} b` for sparse symmetric positive-definite ``Q``.

    Parameters
    ----------
    Q : SparseMatrix or scipy.sparse matrix
    b : TensorVariable
        Vector of length ``n`` or matrix of shape ``(n, k)``.

    Returns
    -------
    TensorVariable
        ``x`` with the shape of ``b``; differentiable in the values of ``Q`` and in ``b``.
    """
    Q = unpack(Q)
    return SparseSolve(Q.pattern)(Q.data, b)
