r"""Reading a numeric CHOLMOD factor in place (a ctypes view of its C struct).

scikit-sparse 0.4 keeps the ``cholmod_factor*`` in a C attribute of its Factor object,
right after the reference to its Common object; the struct layout below is that of
``cholmod_factor`` in CHOLMOD 3.x (SuiteSparse 5, ``/usr/include/suitesparse/cholmod_core.h``).
Every assumption is checked before a pointer is followed, and any mismatch returns None
so the caller falls back to the explicit (slower) ``Factor.L()``.  Imports nothing from
PyTensor.

A supernodal factor is read as it is (:func:`cholmod_supernodal_view`).  A simplicial
one (CHOLMOD's choice for small or sparse factors, :math:`LDL^\top` with unit :math:`L`)
is copied, scaled to :math:`LL^\top`, into the layout of its fundamental supernodes
(:class:`SimplicialPlan`, :func:`pack_simplicial`), so that one supernodal selected
inversion serves both kinds of factor: it touches only the rows each column needs, where
the column-by-column recursion scans every row of the columns it reads.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from pymc_sparse.linalg.supernodes import (
    Supernodes,
    map_pattern_to_supernodes,
    supernodal_to_csc,
    supernodes,
    supernodes_from_csc,
)

__all__ = [
    "SimplicialPlan",
    "cholmod_simplicial_view",
    "cholmod_supernodal_view",
    "diagonal_pivots",
    "factor_layout",
    "pack_simplicial",
    "read_pivots",
    "supernodal_view_cached",
    "symbolic_flops",
]


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


def _factor_struct(chol, n: int, numeric: bool = True):
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
    if f.n != n or f.xtype != int(numeric) or f.dtype != 0 or f.itype not in (0, 2):
        return None
    return f


def symbolic_flops(analysis, n: int) -> float | None:
    r"""Flop count :math:`\sum_j c_j^2` of the factorisation a symbolic analysis plans.

    ``c_j`` is the number of entries of column ``j`` of ``L`` (CHOLMOD's ``ColCount``);
    the numeric factorisation and the selected inversion both cost about this many
    multiply-adds.  None when the analysis cannot be read (unknown layout).
    """
    f = _factor_struct(analysis, n, numeric=False)
    if f is None or not f.ColCount:
        return None
    it = "<i4" if f.itype == 0 else "<i8"
    c = np.asarray(_Buffer(f.ColCount, n, analysis, it)).astype(np.float64)
    return float(c @ c)


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
    def __init__(self, address: int, size: int, owner, typestr: str = "<f8"):
        self.owner = owner
        self.__array_interface__ = {
            "shape": (size,),
            "typestr": typestr,
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


def cholmod_simplicial_view(chol, n: int):
    r"""Arrays of a numeric simplicial CHOLMOD factor, read in place (never written).

    Parameters
    ----------
    chol : sksparse.cholmod.Factor
        A successful numeric factorisation.
    n : int
        Its order (checked against the C struct).

    Returns
    -------
    tuple or None
        ``(p, nz, i, x, is_ll)``: column ``j`` holds ``nz[j]`` rows ``i[p[j]:]`` (sorted,
        diagonal first) with values ``x[p[j]:]``; ``is_ll`` False means unit ``L`` with
        the pivots ``d_j`` on the diagonal (:math:`LDL^\top`).  The views keep ``chol``
        alive and are valid until it is converted (scikit-sparse's ``L()``, ``D()`` and
        ``solve_Lt(..., use_LDLt_decomposition=False)`` convert in place): read them
        again after any such call.  None for a supernodal factor or an unknown layout.
    """
    f = _factor_struct(chol, n)
    if f is None or f.is_super or f.minor != n or not (f.p and f.i and f.x and f.nz):
        return None
    it = "<i4" if f.itype == 0 else "<i8"
    nzmax = int(f.nzmax)
    p = np.asarray(_Buffer(f.p, n + 1, chol, it))
    nz = np.asarray(_Buffer(f.nz, n, chol, it))
    i = np.asarray(_Buffer(f.i, nzmax, chol, it))
    x = np.asarray(_Buffer(f.x, nzmax, chol))
    return p, nz, i, x, bool(f.is_ll)


@dataclass
class SimplicialPlan:
    """Fundamental supernodes of a simplicial factor's pattern, and its position maps.

    Attributes
    ----------
    supernodes : Supernodes
        The plan of the supernodal kernel.
    L_indptr, L_indices : ndarray
        CSC structure of ``L`` (sorted rows, diagonal first).
    l_to_x : ndarray
        Position in the supernodal values of each CSC entry of ``L``.
    col_x : ndarray
        Position of each column's diagonal in the supernodal values; the column's
        entries follow it contiguously (a column of a supernode stores the rows from
        its own down).
    q_to_x : ndarray
        Position in the supernodal values of each stored entry of ``Q``.
    """

    supernodes: Supernodes
    L_indptr: np.ndarray
    L_indices: np.ndarray
    l_to_x: np.ndarray
    col_x: np.ndarray
    q_to_x: np.ndarray

    @classmethod
    def from_view(cls, view, pattern, perm) -> SimplicialPlan:
        """Build the plan from :func:`cholmod_simplicial_view`'s arrays (once per pattern)."""
        p, nz, i, _x, _is_ll = view
        nz = nz.astype(np.int64)
        indptr = np.zeros(nz.size + 1, dtype=np.int64)
        np.cumsum(nz, out=indptr[1:])
        starts = p[:-1].astype(np.int64)
        take = np.repeat(starts - indptr[:-1], nz) + np.arange(indptr[-1])
        indices = i[take].astype(np.int64)
        sn, to_x = supernodes_from_csc(indptr, indices)
        col_x = to_x[indptr[:-1]]
        if not np.array_equal(to_x, np.repeat(col_x - indptr[:-1], nz) + np.arange(indptr[-1])):
            # pragma: no cover - fundamental supernodes store each column contiguously
            raise RuntimeError("A column of L is not contiguous in its supernode.")
        q_to_x = map_pattern_to_supernodes(pattern, perm, sn)
        return cls(sn, indptr, indices, to_x, col_x, q_to_x)


@numba.njit(cache=True, nogil=True)
def _pack_simplicial(p, nz, x, is_ll, indptr, col_x, out):  # pragma: no cover
    # Column j of L = (column j of the unit factor) * sqrt(d_j).  The row indices are
    # those of the analysis the plan was built from (checked then, SimplicialPlan); the
    # counts are checked here (False: a different structure).
    for j in range(col_x.size):
        c = nz[j]
        if c != indptr[j + 1] - indptr[j]:
            return False
        q = p[j]
        o = col_x[j]
        dj = x[q]
        s = 1.0 if is_ll else np.sqrt(dj)
        out[o] = dj if is_ll else s
        for t in range(1, c):
            out[o + t] = x[q + t] * s
    return True


def pack_simplicial(plan: SimplicialPlan, view, out: np.ndarray | None = None):
    r"""Values of :math:`L` (with :math:`LL^\top = PQP^\top`) in the plan's supernodal layout.

    Parameters
    ----------
    plan : SimplicialPlan
    view : tuple
        From :func:`cholmod_simplicial_view`, of a factor with the plan's pattern.
    out : ndarray, optional
        Array of ``plan.supernodes.xsize`` floats to fill (the strict upper triangles of
        the diagonal blocks are left as they are: no kernel reads them).

    Returns
    -------
    ndarray or None
        None when the factor's structure is not the plan's.
    """
    p, nz, _i, x, is_ll = view
    if out is None:
        out = np.zeros(plan.supernodes.xsize)
    ok = _pack_simplicial(p, nz, x, is_ll, plan.L_indptr, plan.col_x, out)
    return out if ok else None


@numba.njit(cache=True, nogil=True)
def diagonal_pivots(x, pos, is_ll, data, qpos, screen, d):  # pragma: no cover - compiled
    r"""Pivots of a factor, read in place, with the log-determinant and a singularity screen.

    Parameters
    ----------
    x, pos : ndarray
        Values of the factor and the position of each column's diagonal entry in them.
    is_ll : bool
        True: the diagonal holds :math:`L_{jj}` (pivot :math:`L_{jj}^2`); False: it
        holds the pivot :math:`d_j` of :math:`LDL^\top`.
    data, qpos : ndarray
        Values of ``Q`` and the position in them of each pivot's own diagonal entry.
    screen : float
        Pivots with :math:`d_j / Q_{jj}` at most this are counted as suspects.
    d : ndarray
        Output: the pivots.

    Returns
    -------
    tuple
        ``(number of pivots not > 0, number of suspects, log det)``, the log-determinant
        :math:`\sum_j \log d_j` being meaningful only when the first is 0.
    """
    bad = 0
    sus = 0
    ld = 0.0
    for j in range(pos.size):
        v = x[pos[j]]
        dj = v * v if is_ll else v
        d[j] = dj
        if not dj > 0.0:
            bad += 1
            continue
        ld += 2.0 * np.log(v) if is_ll else np.log(dj)
        if dj / data[qpos[j]] <= screen:
            sus += 1
    return bad, sus, ld


class LayoutMaps(NamedTuple):
    """Where the entries of ``Q`` and of the CSC form of ``L`` sit in the values ``x``."""

    q_to_x: np.ndarray
    L_indptr: np.ndarray | None
    L_indices: np.ndarray | None
    l_to_x: np.ndarray | None


def factor_layout(chol, pattern, holder, need_l: bool = False, out=None):
    """``(plan, x, maps)``: the values of a numeric factor in supernodal layout, or None.

    Parameters
    ----------
    chol : sksparse.cholmod.Factor
    pattern : SparsityPattern
        The pattern of ``Q``.
    holder : object
        The per-pattern record (``lock``, ``perm``, ``supernodes``, ``simplicial`` and the
        position maps, filled here once).
    need_l : bool
        Also return the CSC form of ``L`` (``maps.L_indptr``, ``L_indices``, ``l_to_x``).
    out : ndarray, optional
        Where to pack a simplicial factor's values, if its size fits.

    Returns
    -------
    tuple or None
        A supernodal factor is read in place; a simplicial one is packed into the layout
        of its fundamental supernodes (``maps`` is then its :class:`SimplicialPlan`).
        None for a layout this module does not know.
    """
    n = pattern.n
    view = None if holder.simplicial else supernodal_view_cached(chol, n, holder)
    if view is not None:
        plan, x = view
        with holder.lock:
            if holder.q_to_x is None:
                holder.q_to_x = map_pattern_to_supernodes(pattern, holder.perm, plan)
            if need_l and holder.l_to_x is None:
                holder.L_indptr, holder.L_indices, holder.l_to_x = supernodal_to_csc(plan)
            maps = LayoutMaps(holder.q_to_x, holder.L_indptr, holder.L_indices, holder.l_to_x)
        return plan, x, maps
    # Under the lock: a conversion of `chol` by another thread would move its arrays.
    with holder.lock:
        sv = cholmod_simplicial_view(chol, n)
        if sv is None:
            return None
        plan = holder.simplicial
        if plan is None or (out is not None and out.size != plan.supernodes.xsize):
            out = None
        x = None if plan is None else pack_simplicial(plan, sv, out)
        if x is None:
            plan = holder.simplicial = SimplicialPlan.from_view(sv, pattern, holder.perm)
            x = pack_simplicial(plan, sv)
    if x is None:  # pragma: no cover - CHOLMOD changed the structure it just built
        return None
    return plan.supernodes, x, plan


def supernodal_diagonal_positions(plan: Supernodes) -> np.ndarray:
    """Position of each column's diagonal entry in supernodal values."""
    # Column c of supernode J (m rows) is at px[J] + c * m; its diagonal entry is row c.
    k = np.diff(plan.sup)
    J = np.repeat(np.arange(k.size), k)
    c = np.arange(plan.n) - plan.sup[J]
    return plan.px[J] + c * (np.diff(plan.pi)[J] + 1)


def read_pivots(chol, n: int, holder, data: np.ndarray, screen: float):
    r"""Pivots of a numeric factor read in place, with the log-determinant and a screen.

    Returns
    -------
    tuple
        ``(d, is_ll, n_bad, n_suspects, logdet)`` as :func:`diagonal_pivots`, ``is_ll``
        telling whether the diagonal holds :math:`L_{jj}` (else the pivots of
        :math:`LDL^\top`).  ``holder`` keeps the diagonal positions of a supernodal plan.
    """
    view = None if holder.simplicial else supernodal_view_cached(chol, n, holder)
    if view is not None:
        plan, x = view
        if holder.diag_x is None or holder.diag_x[0] is not plan:
            holder.diag_x = (plan, supernodal_diagonal_positions(plan))
        pos, is_ll = holder.diag_x[1], True
    else:
        sv = cholmod_simplicial_view(chol, n)
        if sv is None:  # pragma: no cover - a layout this module does not know
            x, pos, is_ll = np.asarray(chol.D(), dtype=np.float64), np.arange(n), False
        else:
            x, pos, is_ll = sv[3], sv[0][:-1], sv[4]
    d = np.empty(n)
    nbad, nsus, ld = diagonal_pivots(x, pos, is_ll, data, holder.qdiag, screen, d)
    return d, is_ll, nbad, nsus, ld
