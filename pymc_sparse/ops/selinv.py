r"""Sparse selected (partial) inverse Op."""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymc_sparse.linalg.host import host_selinv
from pymc_sparse.ops._base import as_data, check_pattern, runtime_data, unpack
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.ops.selinv_grad import SparseSelectedInverseGrad

__all__ = ["SparseSelectedInverse", "marginal_variances", "selected_inverse"]


class SparseSelectedInverse(Op):
    r"""Entries of :math:`S = Q^{-1}` on the (lower-triangle) pattern of :math:`Q`.

    Computed by the Takahashi recursions on the cached Cholesky factor
    (:mod:`pymc_sparse.linalg.takahashi`), in :math:`O(\text{flops of the factorisation})` time
    and :math:`O(\mathrm{nnz}(L))` memory.  NaN-filled when :math:`Q` is not positive
    definite.

    Derivative: :math:`dS = -S\,dQ\,S` restricted to the pattern needs :math:`S` off
    the pattern, so the pullback differentiates the algorithm instead: the Takahashi
    recursion and the Cholesky factorisation run backwards on the pattern of
    :math:`L` (:class:`~pymc_sparse.ops.selinv_grad.SparseSelectedInverseGrad`), exact,
    in :math:`O(\mathrm{nnz}(L))` memory and a small multiple of the factorisation's
    time.  This gives second derivatives of :func:`~pymc_sparse.ops.logdet.logdet` and
    gradients of :func:`marginal_variances`.

    References
    ----------
    .. [1] Murray, I. (2016). Differentiation of the Cholesky decomposition.
       arXiv:1602.07527.
    """

    __props__ = ("pattern",)

    def __init__(self, pattern):
        self.pattern = check_pattern(pattern)

    def make_node(self, data):
        data = as_data(self.pattern, data)
        return Apply(self, [data], [pt.vector(dtype="float64", shape=(self.pattern.nnz,))])

    def perform(self, node, inputs, outputs):
        data = runtime_data(self.pattern, inputs[0])
        outputs[0][0] = host_selinv(self.pattern, data)

    def infer_shape(self, fgraph, node, shapes):
        return [(self.pattern.nnz,)]

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        return [SparseSelectedInverseGrad(self.pattern)(inputs[0], output_grads[0])]


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
    r""":math:`\operatorname{diag}(Q^{-1})`, the marginal variances of :math:`N(0, Q^{-1})`.

    A gather of :func:`selected_inverse`'s diagonal, so it is differentiable in the
    values of ``Q`` through the selected inverse's pullback.
    """
    Q = unpack(Q)
    s = SparseSelectedInverse(Q.pattern)(Q.data)
    return s[Q.pattern.diag_index]
