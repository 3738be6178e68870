"""Small helpers shared by the distributions."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Constant, Variable
from pytensor.tensor.exceptions import NotScalarConstantError

__all__ = [
    "as_scalar_param",
    "check_support_length",
    "constant_value",
    "core_numeric",
    "core_param",
    "is_finite",
]


def constant_value(x):
    """Return the numeric value of a constant (number, array, PyTensor constant), else None."""
    if isinstance(x, Constant):
        return np.asarray(x.data)
    if isinstance(x, Variable):
        try:
            return np.asarray(pt.get_underlying_scalar_constant_value(x))
        except NotScalarConstantError:
            return None
    return np.asarray(x)


def _static_int(x):
    """Return ``x`` as an int if it is known at build time (numbers, constants, shared)."""
    if x is None or x is Ellipsis:
        return None
    if isinstance(x, Variable):
        v = constant_value(x)
        if v is None:
            try:
                v = np.asarray(x.eval())
            except Exception:  # a free symbolic length: nothing to check now
                return None
        x = v
    return int(np.asarray(x))


def check_support_length(kwargs: dict, n: int, graph: str) -> None:
    """Check that ``shape`` (or ``dims``, which PyMC turns into ``shape``) ends in ``n``.

    The last dimension of a GMRF is its support: its length is the order of the graph or
    precision matrix.  PyMC passes ``dims``' lengths to ``dist`` as ``shape``; a mismatch
    would otherwise be noticed only when draws or coordinates are attached, or never.
    """
    shape = kwargs.get("shape")
    if shape is None:
        return
    if isinstance(shape, Variable) or not np.iterable(shape):
        shape = (shape,) if not isinstance(shape, Variable) or shape.type.ndim == 0 else None
        if shape is None:
            return
    shape = tuple(shape)
    if not shape:
        raise ValueError(f"`shape`/`dims` is () but the variable has {n} entries ({graph}).")
    last = _static_int(shape[-1])
    if last is not None and last != n:
        raise ValueError(
            f"The last entry of `shape`/`dims` has length {last} but {graph} has {n} nodes: "
            f"the last dimension is the field's support. Use dims whose last coordinate has "
            f"{n} values (or shape=(..., {n})); batch dimensions go before it."
        )


def as_scalar_param(x, what: str):
    """Convert to a float64 scalar tensor, squeezing arrays whose dimensions all have length 1."""
    x = pt.as_tensor_variable(x)
    if x.type.ndim and not all(x.type.broadcastable):
        raise TypeError(f"`{what}` must be a scalar, got {x.type}.")
    if x.type.ndim:
        x = x.reshape(())
    return pt.cast(x, "float64")


def core_param(p, ndim: int, what: str):
    """Drop the broadcastable leading dimensions PyTensor adds to a core parameter.

    PyTensor expands every parameter to the batch rank of the variable (``size``); a
    parameter shared by the whole batch has length-1 leading dimensions, which are
    removed here.  A genuinely batched parameter raises ``NotImplementedError``.
    """
    extra = p.type.ndim - ndim
    if extra <= 0:
        return p
    if not all(p.type.broadcastable[:extra]):
        raise NotImplementedError(
            f"A batch of different {what} is not supported in the log-density: every member "
            f"of the batch must share one {what}. Create one variable per {what} instead."
        )
    return p.reshape(p.shape[extra:])


def core_numeric(x, ndim: int) -> np.ndarray:
    """Numeric counterpart of :func:`core_param` (drops length-1 leading dimensions)."""
    x = np.asarray(x, dtype=np.float64)
    while x.ndim > ndim and x.shape[0] == 1:
        x = x[0]
    return x


def is_finite(x):
    """Symbolic ``isfinite`` (PyTensor has ``isnan`` and ``isinf`` only)."""
    return ~pt.isnan(x) & ~pt.isinf(x)


def support_point_fill(op, size, params, fill):
    """``fill`` broadcast to the variable's shape, computed from ``size`` and ``params`` only.

    Never from ``rv`` or ``rv.shape``: any reference to the draw makes PyMC's compiled
    initial point collect the RV's RNG update and sample the field (a full factorisation,
    minutes at n = 1e6), even where the rewrites later replace ``rv.shape`` by a constant.
    """
    return pt.alloc(pt.cast(fill, "float64"), *op._infer_shape(size, params))
