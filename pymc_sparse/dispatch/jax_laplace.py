r"""JAX dispatch of the Laplace marginal Ops: a host callback inside ``jax.custom_vjp``.

``pm.sample(nuts_sampler="numpyro" | "blackjax")`` differentiates the jaxified log
density with JAX, so :class:`~pymc_sparse.ops.laplace.LaplaceMarginal` gets a
:func:`jax.custom_vjp` function here: the forward pass of a gradient evaluation is one
:func:`jax.pure_callback` returning the value *and* the five gradient vectors from one
cached solved state (one Newton solve, one selected inverse of :math:`H`); the backward
pass multiplies them by the output cotangent.  Evaluations without a gradient ask for
the value only.  Observations and trials get zero cotangents (they are data).  Failures
give NaN, never an exception from inside a callback.  Only :math:`O(\mathrm{nnz} + n +
m)` numbers cross between device and host, so it also runs with JAX on a GPU (the
factorisations stay on the host CPU).

References
----------
.. [1] Margossian, C. C., Vehtari, A., Simpson, D. and Agrawal, R. (2020). Hamiltonian
   Monte Carlo using an adjoint-differentiated Laplace approximation. NeurIPS 33.
.. [2] JAX documentation, "External callbacks" and "Custom derivative rules".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from pytensor.link.jax.dispatch import jax_funcify

from pymc_sparse.dispatch.jax import _check_float64, _require_x64
from pymc_sparse.linalg.host import nan_guard
from pymc_sparse.linalg.laplace.structure import LaplaceStructure
from pymc_sparse.linalg.lru import lru_function
from pymc_sparse.ops.laplace import (
    LaplaceMarginal,
    LaplaceMarginalGrad,
    _lengths,
    constant_graph,
    laplace_value,
    laplace_value_and_grads,
)

__all__ = [
    "jax_funcify_LaplaceMarginal",
    "jax_funcify_LaplaceMarginalGrad",
    "jax_laplace_marginal",
]

_F64 = np.float64
_GRAD_IDX = (0, 1, 2, 3, 6)


@lru_function(maxsize=32)
def _functions(structure: LaplaceStructure, tol: float, max_iter: int, wrt_q: bool = True):
    """``(value_fn, grads_fn)`` JAX functions of the seven input vectors.

    ``wrt_q=False``: the gradient for ``q`` is zeros, not computed (a constant ``Q``).
    """
    lens = _lengths(structure)
    gshapes = tuple(jax.ShapeDtypeStruct((lens[i],), _F64) for i in _GRAD_IDX)

    def host_value(*args):
        return np.asarray(
            nan_guard(lambda: laplace_value(structure, tol, max_iter, args), ()), dtype=_F64
        )

    def host_both(*args):
        def both():
            v, g = laplace_value_and_grads(structure, tol, max_iter, args, wrt_q)
            return np.concatenate([[v], *g])

        flat = nan_guard(both, (1 + sum(lens[i] for i in _GRAD_IDX),))
        out, pos = [np.asarray(flat[0], dtype=_F64)], 1
        for i in _GRAD_IDX:
            out.append(np.asarray(flat[pos : pos + lens[i]], dtype=_F64))
            pos += lens[i]
        return tuple(out)

    def check(args):
        for a, name in zip(args, ("q_data", "mu", "offset", "a_values", "y", "n_trials", "phi")):
            _check_float64(a, name)

    def both(*args):
        check(args)
        return jax.pure_callback(
            host_both,
            (jax.ShapeDtypeStruct((), _F64), *gshapes),
            *args,
            vmap_method="sequential",
        )

    @jax.custom_vjp
    def value(*args):
        check(args)
        return jax.pure_callback(
            host_value, jax.ShapeDtypeStruct((), _F64), *args, vmap_method="sequential"
        )

    def fwd(*args):
        v, *g = both(*args)
        return v, (g, args[4], args[5])

    def bwd(res, ct):
        (gq, gmu, goff, ga, gphi), y, ntr = res
        return (
            ct * gq,
            ct * gmu,
            ct * goff,
            ct * ga,
            jnp.zeros_like(y),
            jnp.zeros_like(ntr),
            ct * gphi,
        )

    value.defvjp(fwd, bwd)

    def grads(*args):
        return tuple(both(*args)[1:])

    return value, grads


def jax_laplace_marginal(
    structure: LaplaceStructure, tol: float = 1e-10, max_iter: int = 100, wrt_q: bool = True
):
    """JAX function ``(q, mu, offset, a, y, n_trials, phi) -> log p(y | theta)`` (Laplace).

    ``wrt_q=False`` gives zeros as the cotangent of ``q`` (for a constant ``Q``).
    """
    _require_x64()
    return _functions(structure, float(tol), int(max_iter), bool(wrt_q))[0]


@jax_funcify.register(LaplaceMarginal)
def jax_funcify_LaplaceMarginal(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.laplace.LaplaceMarginal`.

    A ``q`` that is a constant of the graph gets no gradient (see ``wrt_q``).
    """
    wrt_q = node is None or not constant_graph(node.inputs[0])
    return jax_laplace_marginal(op.structure, op.tol, op.max_iter, wrt_q)


@jax_funcify.register(LaplaceMarginalGrad)
def jax_funcify_LaplaceMarginalGrad(op, node=None, **kwargs):
    """JAX implementation of :class:`~pymc_sparse.ops.laplace.LaplaceMarginalGrad`.

    Appears when PyTensor compiles its own gradient graph with ``mode="JAX"``; a raw
    callback (no derivative of its own).
    """
    _require_x64()
    return _functions(op.structure, op.tol, op.max_iter, op.wrt_q)[1]
