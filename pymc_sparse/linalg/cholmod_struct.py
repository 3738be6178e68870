r"""Reading a numeric CHOLMOD supernodal factor in place (a ctypes view of its C struct).

scikit-sparse 0.4 keeps the ``cholmod_factor*`` in a C attribute of its Factor object,
right after the reference to its Common object; the struct layout below is that of
``cholmod_factor`` in CHOLMOD 3.x (SuiteSparse 5, ``/usr/include/suitesparse/cholmod_core.h``).
Every assumption is checked before a pointer is followed, and any mismatch returns None
so the caller falls back to the explicit (slower) ``Factor.L()``.  Imports nothing from
PyTensor.
"""

from __future__ import annotations

import ctypes

import numpy as np

from pymc_sparse.linalg.supernodes import Supernodes, supernodes

__all__ = ["cholmod_supernodal_view", "supernodal_view_cached"]


class _CholmodFactor(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 - ctypes declaration
        ("n", ctypes.c_size_t),
        ("minor", ctypes.c_size_t),
        ("Perm", ctypes.c_void_p),
        ("ColCount", ctypes.c_void_p),
        ("IPerm", ctypes.c_void_p),
        ("nzmax", ctypes.c_size_t),
        ("p", ctypes.c_void_p),
        ("i", ctypes.c_void_p),
        ("x", ctypes.c_void_p),
        ("z", ctypes.c_void_p),
        ("nz", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("prev", ctypes.c_void_p),
        ("nsuper", ctypes.c_size_t),
        ("ssize", ctypes.c_size_t),
        ("xsize", ctypes.c_size_t),
        ("maxcsize", ctypes.c_size_t),
        ("maxesize", ctypes.c_size_t),
        ("super", ctypes.c_void_p),
        ("pi", ctypes.c_void_p),
        ("px", ctypes.c_void_p),
        ("s", ctypes.c_void_p),
        ("ordering", ctypes.c_int),
        ("is_ll", ctypes.c_int),
        ("is_super", ctypes.c_int),
        ("is_monotonic", ctypes.c_int),
        ("itype", ctypes.c_int),
        ("xtype", ctypes.c_int),
        ("dtype", ctypes.c_int),
    ]


def _factor_struct(chol, n: int):
    try:
        from sksparse.cholmod import Factor as _SkFactor
    except ImportError:  # pragma: no cover
        return None
    if type(chol) is not _SkFactor or _SkFactor.__basicsize__ != 4 * ctypes.sizeof(ctypes.c_void_p):
        return None
    words = (ctypes.c_void_p * 4).from_address(id(chol))
    if words[2] != id(getattr(chol, "_common", None)) or not words[3]:
        return None
    f = _CholmodFactor.from_address(words[3])
    if f.n != n or f.xtype != 1 or f.dtype != 0 or f.itype not in (0, 2):
        return None
    return f


def cholmod_supernodal_view(chol, n: int, plan: Supernodes | None = None):
    """Supernodal plan and values of a numeric CHOLMOD factor, read in place.

    Parameters
    ----------
    chol : sksparse.cholmod.Factor
        A successful numeric factorisation.
    n : int
        Its order (checked against the C struct).
    plan : Supernodes, optional
        The plan of an earlier factor from the same symbolic analysis; reused when the
        sizes match, so the integer arrays are read and analysed once per pattern.

    Returns
    -------
    tuple or None
        ``(plan, x)`` with ``x`` a view (never written) of the values; it keeps
        ``chol`` alive and is valid until ``chol`` is refactorised or converted to
        another kind of factor.  None when the factor is simplicial or its layout is
        not the one this module knows.
    """
    f = _factor_struct(chol, n)
    if f is None or not (f.is_super and f.is_ll) or f.minor != n or not f.x:
        return None
    ns = int(f.nsuper)
    if not (
        plan is not None
        and plan.sup.size == ns + 1
        and plan.s.size == f.ssize
        and plan.n == n
        and plan.xsize <= f.xsize
    ):
        it = ctypes.c_int32 if f.itype == 0 else ctypes.c_int64

        def ints(ptr, size):
            a = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(it)), (size,))
            return a.astype(np.int64)

        sup = ints(f.super, ns + 1)
        pi = ints(f.pi, ns + 1)
        px = ints(f.px, ns + 1)
        if sup[-1] != n or px[-1] > f.xsize or pi[-1] > f.ssize:
            return None
        plan = supernodes(sup, pi, px, ints(f.s, int(pi[-1])))
    return plan, np.asarray(_Buffer(f.x, plan.xsize, chol))


class _Buffer:
    # Exposes CHOLMOD's values to NumPy; the array's base keeps the factor alive.
    def __init__(self, address: int, size: int, owner):
        self.owner = owner
        self.__array_interface__ = {
            "shape": (size,),
            "typestr": "<f8",
            "data": (address, False),
            "version": 3,
        }


def supernodal_view_cached(chol, n: int, holder):
    """:func:`cholmod_supernodal_view` keeping the plan on a per-pattern record.

    Parameters
    ----------
    chol : sksparse.cholmod.Factor or None
    n : int
    holder : object
        Has ``lock``, ``supernodes`` (the plan, or None) and the position maps
        ``q_to_x`` and ``l_to_x``, which are reset when the plan is replaced.
    """
    if chol is None:
        return None
    view = cholmod_supernodal_view(chol, n, holder.supernodes)
    if view is not None and view[0] is not holder.supernodes:
        with holder.lock:
            holder.supernodes = view[0]
            holder.q_to_x = holder.l_to_x = None
    return view
