"""The Op of a tabulated one-parameter log-determinant, and its wrapper."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymc_sparse.logdet1d.table import LogDetFamily

__all__ = ["OneParameterLogDet", "tabulated_logdet"]


class OneParameterLogDet(Op):
    r"""Scalar :math:`f^{(d)}(\alpha)` of a tabulated family :math:`\log\det(A_0 + \alpha A_1)`.

    ``derivative`` is 0 (the log-determinant), 1 or 2.  Inside the tabulated interval
    the value comes from the piecewise Chebyshev table (:math:`O(1)`); outside it from an
    exact factorisation (and selected inverse for :math:`f'`).  NaN where
    :math:`Q(\alpha)` is not positive definite.

    Gradient: :math:`\partial f^{(d)}/\partial\alpha = f^{(d+1)}`; the table's
    derivatives are the exact derivatives of the interpolant, so value and gradient are
    consistent to rounding.
    """

    __props__ = ("family", "derivative")

    def __init__(self, family: LogDetFamily, derivative: int = 0):
        if not isinstance(family, LogDetFamily):
            raise TypeError(f"`family` must be a LogDetFamily, got {type(family).__name__}.")
        if derivative not in (0, 1, 2):
            raise ValueError(f"`derivative` must be 0, 1 or 2, got {derivative!r}.")
        self.family = family
        self.derivative = int(derivative)

    def make_node(self, alpha):
        alpha = pt.as_tensor_variable(alpha)
        if alpha.type.ndim != 0:
            raise TypeError(f"`alpha` must be a scalar, got {alpha.type}.")
        if alpha.type.dtype != "float64":
            alpha = pt.cast(alpha, "float64")
        return Apply(self, [alpha], [pt.scalar(dtype="float64")])

    def perform(self, node, inputs, outputs):
        value = self.family.evaluate(inputs[0], self.derivative)
        outputs[0][0] = np.asarray(value, dtype="float64")

    def infer_shape(self, fgraph, node, shapes):
        return [()]

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        if self.derivative == 2:
            from pytensor.gradient import grad_not_implemented

            msg = "Third derivatives are not tabulated."
            return [grad_not_implemented(self, 0, inputs[0], msg)]
        return [output_grads[0] * OneParameterLogDet(self.family, self.derivative + 1)(inputs[0])]


def tabulated_logdet(family: LogDetFamily, alpha):
    r"""Symbolic :math:`\log\det Q(\alpha)` of a scalar PyTensor variable, differentiable.

    Same as ``family(alpha)``.
    """
    return OneParameterLogDet(family, 0)(alpha)
