r"""Sparse selected (partial) inverse Op."""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymc_sparse.ops._base import CACHE, as_data, check_pattern, runtime_data, unpack
from pymc_sparse.sparse import SparseMatrix

__all__ = ["SparseSelectedInverse", "marginal_variances", "selected_inverse"]


class SparseSelectedInverse(Op):
    r"""Entries of :math:`S = Q^{-1}` on the (lower-triangle) pattern of :math:`Q`.

    Computed by the Takahashi recursions on the cached Cholesky factor
    (:mod:`pymc_sparse.selinv`), in :math:`O(\text{flops of the factorisation})` time
    and :math:`O(\mathrm{nnz}(L))` memory.  NaN-filled when :math:`Q` is not positive
    definite.

    Its derivative, :math:`dS = -S\,dQ\,S` restricted to the pattern, needs entries of
    :math:`S` off the pattern; it is not implemented yet and asking for it raises.
    """

    __props__ = ("pattern",)

    def __init__(self, pattern):
        self.pattern = check_pattern(pattern)

    def make_node(self, data):
        data = as_data(self.pattern, data)
        return Apply(self, [data], [pt.vector(dtype="float64", shape=(self.pattern.nnz,))])

    def perform(self, node, inputs, outputs):
        data = runtime_data(self.pattern, inputs[0])
        outputs[0][0] = CACHE.factor(self.pattern, data).selected_inverse().copy()

    def infer_shape(self, fgraph, node, shapes):
        return [(self.pattern.nnz,)]

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        return [
            grad_not_implemented(
                self,
                0,
                inputs[0],
                "The gradient of the selected inverse (second derivatives of logdet, "
                "gradients of marginal variances) is not implemented yet.",
            )
        ]


def selected_inverse(Q) -> SparseMatrix:
    r"""Entries of :math:`Q^{-1}` on the pattern of ``Q``, as a SparseMatrix.

    Parameters
    ----------
    Q : SparseMatrix or scipy.sparse matrix

    Returns
    -------
    SparseMatrix
        Same pattern as ``Q``; values are :math:`(Q^{-1})_{ij}` for stored ``(i, j)``.
    """
    Q = unpack(Q)
    return SparseMatrix(Q.pattern, SparseSelectedInverse(Q.pattern)(Q.data))


def marginal_variances(Q):
    r""":math:`\operatorname{diag}(Q^{-1})`, the marginal variances of :math:`N(0, Q^{-1})`."""
    Q = unpack(Q)
    s = SparseSelectedInverse(Q.pattern)(Q.data)
    return s[Q.pattern.diag_index]
