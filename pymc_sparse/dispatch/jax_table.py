r"""JAX dispatch of :class:`~pymc_sparse.logdet1d.table.OneParameterLogDet`: the table in ``jnp``.

Inside the tabulated interval the log-determinant is a piecewise Chebyshev series: a
``searchsorted`` among the piece boundaries, a Clenshaw recurrence (unrolled, at most 33
terms) and the removed singular terms :math:`k\log|\alpha - s|`, all in ``jax.numpy``, so
it jits, vmaps and runs on an accelerator without leaving the device.  Outside the
interval (rare: the tables cover the support up to a small margin) the exact value comes
from CHOLMOD through :func:`jax.pure_callback` under :func:`jax.lax.cond`.

Derivatives are a :func:`jax.custom_jvp` whose tangent is the next tabulated derivative
(:math:`f'`, then :math:`f''`), the same numbers the PyTensor Op's ``L_op`` uses, so
``jax.grad`` of the jaxified graph equals ``pytensor.grad`` on the C backend; forward and
reverse mode both work.  Under :func:`jax.vmap` a ``lax.cond`` becomes a select that
runs both branches; the host callback then answers in-table points from the table
without factorising.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from pytensor.link.jax.dispatch import jax_funcify

from pymc_sparse.linalg.lru import lru_function
from pymc_sparse.logdet1d.table import LogDetFamily
from pymc_sparse.ops.table import OneParameterLogDet

__all__ = ["jax_funcify_OneParameterLogDet", "logdet1d_jax_function"]


def _table_function(family: LogDetFamily, derivative: int):
    # NumPy here, converted inside `table`: a jnp constant created while one trace is
    # running must not be captured by a cached function used in another trace.
    breaks_np = np.asarray(family.breaks)
    coef_np = np.asarray((family.coef, family.dcoef, family.d2coef)[derivative])
    npieces, K = family.coef.shape
    sings = [(s.point, float(s.multiplicity)) for s in family.singularities if s.multiplicity]
    offset = family.offset if derivative == 0 else 0.0

    def table(alpha):
        breaks = jnp.asarray(breaks_np)
        coef = jnp.asarray(coef_np)
        i = jnp.clip(jnp.searchsorted(breaks, alpha, side="right") - 1, 0, npieces - 1)
        a = breaks[i]
        b = breaks[i + 1]
        t = (2.0 * alpha - (a + b)) / (b - a)
        c = coef[i]
        b1 = jnp.zeros_like(alpha)
        b2 = jnp.zeros_like(alpha)
        for k in range(K - 1, 0, -1):  # Clenshaw, unrolled: K <= 33
            b1, b2 = c[k] + 2.0 * t * b1 - b2, b1
        v = c[0] + t * b1 - b2 + offset
        for s, m in sings:
            if derivative == 0:
                v = v + m * jnp.log(jnp.abs(alpha - s))
            elif derivative == 1:
                v = v + m / (alpha - s)
            else:
                v = v - m / (alpha - s) ** 2
        return v

    return table


@lru_function(maxsize=64)
def logdet1d_jax_function(family: LogDetFamily, derivative: int = 0):
    r"""A JAX function ``alpha -> f^{(derivative)}(alpha)`` of a tabulated family.

    Differentiable (``custom_jvp``) up to the second derivative of the table.
    """
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "The log-determinant table needs float64 in JAX: run "
            "`jax.config.update('jax_enable_x64', True)` before building the function."
        )
    table = _table_function(family, derivative)
    lo, hi = family.lo, family.hi

    def host(alpha):
        return np.asarray(family.evaluate(float(alpha), derivative), dtype=np.float64)

    def exact(alpha):
        return jax.pure_callback(
            host, jax.ShapeDtypeStruct((), jnp.float64), alpha, vmap_method="sequential"
        )

    def value(alpha):
        alpha = jnp.asarray(alpha, dtype=jnp.float64)
        inside = (alpha >= lo) & (alpha <= hi)
        return jax.lax.cond(inside, table, exact, alpha)

    fn = jax.custom_jvp(value)

    @fn.defjvp
    def _jvp(primals, tangents):
        (alpha,) = primals
        (dalpha,) = tangents
        if derivative < 2:
            slope = logdet1d_jax_function(family, derivative + 1)(alpha)
        else:  # third derivative: only inside the table, from the polynomial itself
            slope = jax.grad(table)(jnp.asarray(alpha, dtype=jnp.float64))
        return fn(alpha), slope * dalpha

    return fn


@jax_funcify.register(OneParameterLogDet)
def jax_funcify_OneParameterLogDet(op, node=None, **kwargs):
    """JAX function of :class:`OneParameterLogDet` (see the module docstring)."""
    fn = logdet1d_jax_function(op.family, op.derivative)

    def one_parameter_logdet(alpha):
        return fn(alpha)

    return one_parameter_logdet
