r"""A batching rule for ``jax.custom_derivatives.linear_call`` (JAX ships none).

The selected inverse's forward-mode derivative :math:`\dot S = J\,\dot q` is a host
callback that JAX cannot transpose by itself, so :mod:`pymc_sparse.dispatch.jax` wraps
it in ``linear_call`` with its transpose :math:`J^\top` (the adjoint Takahashi kernel).
``jax.hessian`` (``jacfwd`` of ``jacrev``) and ``jax.jacfwd`` batch tangents with
``vmap``, which needs a batching rule.  The rule is the obvious one: put every batch axis
in front, treat every linear operand as batched (a linear map of an unbatched operand is
the same map of a broadcast one), batch the callee and its transpose as jaxprs, and bind
``linear_call`` again with both, so the batched primitive still transposes to its
batched transpose.

This uses JAX internals (``jax._src``); :func:`register` returns ``False`` instead of
raising if they moved, and second derivatives then fail with JAX's own
``NotImplementedError`` naming ``linear_call``.
"""

from __future__ import annotations

import functools


@functools.cache
def register() -> bool:
    """Install the batching rule once; ``True`` if ``linear_call`` can now be batched."""
    try:
        from jax._src import custom_derivatives as cd
        from jax._src.interpreters import batching
        from jax._src.interpreters import partial_eval as pe
    except ImportError:  # pragma: no cover - JAX reorganised its internals
        return False
    prim = getattr(cd, "linear_call_p", None)
    if prim is None or not hasattr(batching, "fancy_primitive_batchers"):
        return False  # pragma: no cover
    if prim in batching.fancy_primitive_batchers:
        return True  # JAX grew its own rule: prefer it

    def rule(axis_data, args, dims, *, callee, transpose_thunk, num_callee_consts, num_res):
        n_fixed = num_callee_consts + num_res
        size = axis_data.size
        new_args, in_batched = [], []
        for i, (x, d) in enumerate(zip(args, dims, strict=True)):
            linear = i >= n_fixed
            if d is None and not linear:
                new_args.append(x)
                in_batched.append(False)
            else:
                new_args.append(batching.bdim_at_front(x, d, size))
                in_batched.append(True)
        callee_b, _ = batching.batch_jaxpr(callee, axis_data, in_batched, instantiate=True)
        res_batched = in_batched[num_callee_consts:n_fixed]
        n_out = len(callee.out_avals)

        @pe._memoize
        def thunk():
            t_jaxpr, t_consts = transpose_thunk()
            t_b, _ = batching.batch_jaxpr(
                t_jaxpr,
                axis_data,
                [False] * len(t_consts) + res_batched + [True] * n_out,
                instantiate=True,
            )
            return t_b, t_consts

        out = prim.bind(
            *new_args,
            callee=callee_b,
            transpose_thunk=thunk,
            num_callee_consts=num_callee_consts,
            num_res=num_res,
        )
        return out, [0] * len(out)

    batching.fancy_primitive_batchers[prim] = rule
    return True
