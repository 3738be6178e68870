r"""The sparse embedded Laplace marginal as a PyTensor Op, with its IFT gradient.

:class:`LaplaceMarginal` maps ``(q, mu, offset, a, y, n_trials, phi)`` to the Laplace
approximation of :math:`\log p(y \mid \theta)` (see
:mod:`pymc_sparse.linalg.laplace` for the maths); :class:`LaplaceMarginalGrad`
returns its gradient with respect to ``q, mu, offset, a, phi`` by the implicit function
theorem.  Both read one cached solved state, so a value and its gradient at one point
cost one Newton solve, one selected inverse of :math:`H` (and of :math:`Q`) and
:math:`O(1)` solves.

References
----------
.. [1] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. J. R. Stat.
   Soc. B 71, 319-392.
.. [2] Margossian, C. C., Vehtari, A., Simpson, D. and Agrawal, R. (2020). Hamiltonian
   Monte Carlo using an adjoint-differentiated Laplace approximation. NeurIPS 33.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented, grad_undefined
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op

try:  # pytensor >= 2.31
    from pytensor.graph.traversal import graph_inputs as _graph_inputs
except ImportError:  # pragma: no cover - older pytensor
    from pytensor.graph.basic import graph_inputs as _graph_inputs

from pymc_sparse.linalg.host import nan_guard
from pymc_sparse.linalg.laplace.newton import _Inputs, laplace_gradient, laplace_state
from pymc_sparse.linalg.laplace.structure import LaplaceStructure
from pymc_sparse.ops.matrix import _as_float64_vector

__all__ = ["LaplaceMarginal", "LaplaceMarginalGrad", "laplace_marginal"]

_NAMES = ("q_data", "mu", "offset", "a_values", "y", "n_trials", "phi")


def _lengths(s: LaplaceStructure):
    return (s.q_pattern.nnz, s.n, s.m, s.a_default.size, s.m, s.m, s.m)


def _make_inputs(s: LaplaceStructure, inputs):
    out = []
    for v, name, length in zip(inputs, _NAMES, _lengths(s)):
        v = _as_float64_vector(v, name)
        if v.type.shape[0] is not None and v.type.shape[0] != length:
            raise ValueError(f"`{name}` must have length {length}, got {v.type.shape[0]}.")
        out.append(v)
    return out


def numeric_inputs(s: LaplaceStructure, inputs) -> _Inputs:
    """Check run-time lengths and wrap the arrays (no support checks: NaN, not errors)."""
    arrs = [np.ascontiguousarray(v, dtype=np.float64) for v in inputs]
    for v, name, length in zip(arrs, _NAMES, _lengths(s)):
        if v.shape != (length,):
            raise ValueError(f"`{name}` must have shape ({length},), got {v.shape}.")
    return _Inputs(*arrs)


def laplace_value(s: LaplaceStructure, tol: float, max_iter: int, inputs) -> float:
    """Laplace log-marginal at numeric inputs; NaN on failure."""
    inp = numeric_inputs(s, inputs)
    st = nan_guard(lambda: laplace_state(s, inp, tol=tol, max_iter=max_iter), ())
    return float("nan") if st is None or isinstance(st, np.ndarray) else st.value


def constant_graph(var) -> bool:
    """True when ``var`` depends on constants only (no inputs, no shared variables)."""
    return all(isinstance(v, Constant) for v in _graph_inputs([var]))


def laplace_value_and_grads(
    s: LaplaceStructure, tol: float, max_iter: int, inputs, wrt_q: bool = True
):
    """``(value, [g_q, g_mu, g_offset, g_a, g_phi])``, NaN-filled on failure.

    ``wrt_q=False``: ``g_q`` is zeros, not computed (``q`` is a constant of the graph).
    """
    inp = numeric_inputs(s, inputs)
    lens = _lengths(s)
    nan = float("nan"), [np.full(lens[i], np.nan) for i in (0, 1, 2, 3, 6)]
    st = nan_guard(lambda: laplace_state(s, inp, tol=tol, max_iter=max_iter), ())
    if st is None or isinstance(st, np.ndarray):
        return nan
    grads = nan_guard(lambda: list(laplace_gradient(st, wrt_q=wrt_q)), ())
    return nan if isinstance(grads, np.ndarray) else (st.value, grads)


class LaplaceMarginal(Op):
    r"""Laplace approximation of :math:`\log p(y \mid \theta)` with a latent sparse GMRF.

    Inputs (float64 vectors): stored values ``q`` of :math:`Q` (``nnz``), prior mean
    ``mu`` (``n``), ``offset`` (``m``), values ``a`` of :math:`A` (its pattern's order),
    observations ``y``, ``n_trials`` and the family parameter ``phi`` (``m`` each).
    Output: the scalar value, NaN if the inner Newton iteration fails or :math:`Q` or
    :math:`H` is not positive definite.  ``structure``
    (:class:`~pymc_sparse.linalg.laplace.structure.LaplaceStructure`) holds the
    patterns, the family and the constraint.
    """

    __props__ = ("structure", "tol", "max_iter")

    def __init__(self, structure: LaplaceStructure, tol: float = 1e-10, max_iter: int = 100):
        if not isinstance(structure, LaplaceStructure):
            raise TypeError(f"`structure` must be a LaplaceStructure, got {type(structure)}.")
        self.structure = structure
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def make_node(self, *inputs):
        """Check the seven input vectors; the output is a float64 scalar."""
        if len(inputs) != 7:
            raise TypeError(f"LaplaceMarginal takes 7 inputs ({', '.join(_NAMES)}).")
        return Apply(self, _make_inputs(self.structure, inputs), [pt.scalar(dtype="float64")])

    def perform(self, node, inputs, outputs):
        """Solve for the mode and evaluate (NaN on failure)."""
        outputs[0][0] = np.asarray(
            laplace_value(self.structure, self.tol, self.max_iter, inputs), dtype="float64"
        )

    def infer_shape(self, fgraph, node, shapes):
        """Return the scalar shape."""
        return [()]

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        """Return the IFT gradient times the output cotangent (y, n_trials: undefined)."""
        (g,) = output_grads
        # A Q built from constants only (BYM2 through marginalize_laplace) needs no gradient:
        # the gradient Op then skips the prior's selected inverse and the terms on Q.
        wrt_q = not constant_graph(inputs[0])
        grad_op = LaplaceMarginalGrad(self.structure, self.tol, self.max_iter, wrt_q)
        gq, gmu, goff, ga, gphi = grad_op(*inputs)
        return [
            g * gq,
            g * gmu,
            g * goff,
            g * ga,
            grad_undefined(self, 4, inputs[4], "observations y are data"),
            grad_undefined(self, 5, inputs[5], "n_trials are data"),
            g * gphi,
        ]


class LaplaceMarginalGrad(Op):
    """Gradient of :class:`LaplaceMarginal` wrt ``q, mu, offset, a, phi`` (IFT, adjoint).

    Reuses the solved state of the value's evaluation at the same inputs (cached), so the
    Newton iteration runs once; then one selected inverse of :math:`H` and two solves.
    ``wrt_q=False`` (set by :meth:`LaplaceMarginal.L_op` when ``q`` depends on constants
    only) returns zeros for ``q``, whose gradient nothing reads.
    """

    __props__ = ("structure", "tol", "max_iter", "wrt_q")

    def __init__(
        self,
        structure: LaplaceStructure,
        tol: float = 1e-10,
        max_iter: int = 100,
        wrt_q: bool = True,
    ):
        self.structure = structure
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.wrt_q = bool(wrt_q)

    def make_node(self, *inputs):
        """Check the inputs; outputs are the five gradient vectors."""
        inputs = _make_inputs(self.structure, inputs)
        outs = [inputs[i].type() for i in (0, 1, 2, 3, 6)]
        return Apply(self, inputs, outs)

    def perform(self, node, inputs, outputs):
        """Compute the gradient from the cached solved state (NaN on failure)."""
        _, grads = laplace_value_and_grads(
            self.structure, self.tol, self.max_iter, inputs, self.wrt_q
        )
        for out, gr in zip(outputs, grads):
            out[0] = np.asarray(gr, dtype="float64")

    def infer_shape(self, fgraph, node, shapes):
        """Return the shapes of the differentiable inputs."""
        return [shapes[i] for i in (0, 1, 2, 3, 6)]

    def L_op(self, inputs, outputs, output_grads):
        """Second derivatives are not offered."""
        return [
            grad_not_implemented(self, i, x, "second derivatives of the Laplace marginal")
            for i, x in enumerate(inputs)
        ]


def laplace_marginal(structure, q_data, mu, offset, a_values, y, n_trials, phi, tol=1e-10):
    r"""Symbolic Laplace log-marginal :math:`\log p(y \mid \theta)` (NaN on failure).

    Parameters
    ----------
    structure : LaplaceStructure
    q_data, mu, offset, a_values, y, n_trials, phi : tensor_like
        Float64 vectors of lengths ``nnz(Q), n, m, nnz(A), m, m, m``; ``n_trials`` and
        ``phi`` are ignored (pass ones) by families that do not use them.
    tol : float
        Newton tolerance on ``max|step| / (1 + max|x|)``.

    Returns
    -------
    TensorVariable
        Scalar.
    """
    return LaplaceMarginal(structure, tol)(q_data, mu, offset, a_values, y, n_trials, phi)
