r"""Sparse log-determinant Op."""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymc_sparse.linalg.host import host_logdet
from pymc_sparse.ops._base import as_data, check_pattern, runtime_data, unpack

__all__ = ["SparseLogDet", "logdet"]


class SparseLogDet(Op):
    r"""Log-determinant of a symmetric positive-definite sparse matrix.

    Input: the vector ``data`` of stored lower-triangle values; output: the scalar
    :math:`\log\det Q`, NaN when :math:`Q` is not positive definite.

    Derivative: :math:`d\log\det Q = \operatorname{tr}(Q^{-1} dQ)`.  A stored value
    :math:`q_e` at :math:`(i, j)` enters :math:`Q` once on the diagonal and twice off it,
    so

    .. math:: \frac{\partial \log\det Q}{\partial q_e} = w_e\, (Q^{-1})_{ij},
              \qquad w_e = 1 \text{ if } i = j,\ 2 \text{ otherwise},

    which needs :math:`Q^{-1}` only on the pattern of :math:`Q`: the selected inverse,
    computed from the same cached factor.

    References
    ----------
    .. [1] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*. Chapman & Hall, 2.4.
    """

    __props__ = ("pattern",)

    def __init__(self, pattern):
        self.pattern = check_pattern(pattern)

    def make_node(self, data):
        data = as_data(self.pattern, data)
        return Apply(self, [data], [pt.scalar(dtype="float64")])

    def perform(self, node, inputs, outputs):
        data = runtime_data(self.pattern, inputs[0])
        outputs[0][0] = host_logdet(self.pattern, data)

    def infer_shape(self, fgraph, node, shapes):
        return [()]

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        from pymc_sparse.ops.selinv import SparseSelectedInverse

        (data,) = inputs
        w = pt.constant(self.pattern.symmetric_weights)
        return [output_grads[0] * w * SparseSelectedInverse(self.pattern)(data)]


def logdet(Q):
    r"""Symbolic :math:`\log\det Q` of a sparse symmetric positive-definite matrix.

    Parameters
    ----------
    Q : SparseMatrix or scipy.sparse matrix

    Returns
    -------
    TensorVariable
        Scalar; NaN when ``Q`` is not positive definite, so a sampler rejects the point.
    """
    Q = unpack(Q)
    return SparseLogDet(Q.pattern)(Q.data)
