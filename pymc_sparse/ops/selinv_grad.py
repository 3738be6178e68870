r"""Pullback of the selected inverse as an Op (second derivatives of the log-determinant)."""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymc_sparse.linalg.host import host_selinv_vjp
from pymc_sparse.ops._base import as_data, check_pattern, runtime_data

__all__ = ["SparseSelectedInverseGrad"]


class SparseSelectedInverseGrad(Op):
    r"""Cotangent of the stored values of :math:`Q` from a cotangent of its selected inverse.

    Inputs: ``data`` (stored lower values of :math:`Q`) and ``sbar`` (cotangent of
    :math:`s = \mathcal P(Q^{-1})`, same layout); output

    .. math:: \bar q_e = -w_e\,(S \bar B S)_{ij}, \qquad e = (i, j),

    with :math:`\bar B` the symmetric matrix holding :math:`\bar s_e / w_e` at
    :math:`(i, j)` and :math:`(j, i)`.  Computed exactly on the pattern of the cached
    Cholesky factor by the reverse sweeps of the Takahashi recursion and of the
    Cholesky factorisation (:mod:`pymc_sparse.linalg.takahashi_adjoint`), in
    :math:`O(\mathrm{nnz}(L))` memory; NaN-filled when :math:`Q` is not positive
    definite.

    Derivative: the map :math:`\bar s \mapsto \bar q` is linear, :math:`H = W T W^{-1}`
    with :math:`T(\bar b) = -\mathcal P(S \bar B S)` self-adjoint in the Frobenius
    product :math:`\langle x, y\rangle_W = \sum_e w_e x_e y_e`, so its transpose is
    :math:`H^\top g = H(w \odot g) / w`: the same Op, which makes the gradient with
    respect to ``sbar`` cheap.  The gradient with respect to ``data`` (third
    derivatives of :math:`\log\det Q`) is not implemented.

    References
    ----------
    .. [1] Murray, I. (2016). Differentiation of the Cholesky decomposition.
       arXiv:1602.07527.
    .. [2] Takahashi, K., Fagan, J. and Chen, M.-S. (1973). Formation of a sparse bus
       impedance matrix and its application to short circuit study. PICA Conference.
    """

    __props__ = ("pattern",)

    def __init__(self, pattern):
        self.pattern = check_pattern(pattern)

    def make_node(self, data, sbar):
        data = as_data(self.pattern, data)
        sbar = as_data(self.pattern, sbar)
        return Apply(self, [data, sbar], [pt.vector(dtype="float64", shape=(self.pattern.nnz,))])

    def perform(self, node, inputs, outputs):
        data, sbar = inputs
        data = runtime_data(self.pattern, data)
        sbar = runtime_data(self.pattern, sbar)
        outputs[0][0] = host_selinv_vjp(self.pattern, data, sbar)

    def infer_shape(self, fgraph, node, shapes):
        return [(self.pattern.nnz,)]

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        data, _ = inputs
        w = pt.constant(self.pattern.symmetric_weights)
        return [
            grad_not_implemented(
                self,
                0,
                data,
                "Third derivatives of the sparse log-determinant (the gradient of the "
                "selected inverse's pullback with respect to Q) are not implemented.",
            ),
            self(data, w * output_grads[0]) / w,
        ]
