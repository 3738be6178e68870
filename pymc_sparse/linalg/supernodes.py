r"""The supernode plan of a Cholesky factor, shared by the Takahashi kernel and its adjoint.

A *fundamental supernode* is a maximal run of consecutive columns ``j, j+1, ...`` of
:math:`L` whose structures nest, :math:`\mathrm{struct}(L_{:,j}) = \{j\} \cup
\mathrm{struct}(L_{:,j+1})`: its values form one dense trapezoidal block, so the
selected inverse and its adjoint run block by block in BLAS.  This module holds the one
partitioner (:func:`supernode_starts`), the :class:`Supernodes` plan with the gather
plan of the kernel (:func:`supernodes`), and the maps between CSC positions, the
supernodal layout and a matrix pattern.  NumPy/numba only, no PyTensor.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

__all__ = [
    "LOOP_MAX",
    "Supernodes",
    "map_pattern_to_supernodes",
    "supernodal_to_csc",
    "supernode_starts",
    "supernodes",
    "supernodes_from_csc",
]


#: Supernodes with ``k m^2 <= LOOP_MAX`` (``k`` columns, ``m`` rows) get the flat gather
#: index of :class:`Supernodes`, which the kernel's plain-loop path needs; its ``small``
#: threshold cannot exceed it.  At most ``LOOP_MAX / 2`` indices per supernode.
LOOP_MAX = 8192


@numba.njit(cache=True, nogil=True)
def supernode_starts(indptr, indices):  # pragma: no cover - compiled
    """Start column of each fundamental supernode of ``L`` (and ``n`` last).

    Column ``j + 1`` joins the supernode of column ``j`` when the structure of column
    ``j`` is ``{j}`` followed by the structure of column ``j + 1`` (rows compared, so the
    input need not be chordal).  ``indptr, indices``: CSC structure of ``L``, rows sorted,
    diagonal first.
    """
    n = indptr.size - 1
    starts = np.empty(n + 1, dtype=np.int64)
    starts[0] = 0
    m = 1
    for j in range(n - 1):
        p0 = indptr[j]
        c0 = indptr[j + 1] - p0
        c1 = indptr[j + 2] - indptr[j + 1]
        same = c0 == c1 + 1 and c0 >= 2 and indices[p0 + 1] == j + 1
        if same:
            q = indptr[j + 1]
            for t in range(c1):
                if indices[p0 + 1 + t] != indices[q + t]:
                    same = False
                    break
        if not same:
            starts[m] = j + 1
            m += 1
    starts[m] = n
    return starts[: m + 1].copy()


@numba.njit(cache=True)
def _bisect(a, lo, hi, key):  # pragma: no cover - compiled
    """Position of ``key`` in the sorted slice ``a[lo:hi]``, or -1."""
    end = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < end and a[lo] == key else -1


class Supernodes(NamedTuple):
    r"""Supernodal structure of a Cholesky factor and the gather plan of the kernel.

    Supernode ``J`` owns columns ``sup[J]:sup[J+1]`` (``k`` of them) and row indices
    ``s[pi[J]:pi[J+1]]`` (``m`` of them, sorted, the first ``k`` being its own columns).
    Its values are a column-major ``m x k`` block at ``x[px[J]:]`` (leading dimension
    ``m``), the layout of a CHOLMOD supernodal factor.

    The rows ``R`` below the diagonal block are split into *segments*, maximal runs of
    rows that are columns of one ancestor supernode ``K``; for a segment starting at
    position ``b0`` of ``R``, the rows ``R[b0:]`` are found in ``K``'s row list and
    stored as *runs* ``(t0, rel, len)``: rows ``R[t0:t0+len]`` sit at consecutive
    positions ``rel, rel+1, ...`` of ``K``.  These runs turn the gather of
    :math:`\Sigma_{RR}` into contiguous copies.

    For the small supernodes (``k m^2 <= loop_max``, :data:`LOOP_MAX` by default) the
    runs are also unrolled into ``rr_idx``: the position in ``x`` of every entry of the
    lower triangle of :math:`\Sigma_{RR}`, packed by columns (column ``b`` holds rows
    ``b..r-1``), from ``rr_ptr[J]`` on (``rr_ptr[J+1] == rr_ptr[J]`` for the others).
    On blocks of a few rows the runs are one or two entries long, and walking them
    costs more than the arithmetic; a flat index list costs one load per entry.
    """

    sup: np.ndarray
    pi: np.ndarray
    px: np.ndarray
    s: np.ndarray
    snode: np.ndarray
    seg_ptr: np.ndarray
    seg_snode: np.ndarray
    seg_b0: np.ndarray
    seg_b1: np.ndarray
    run_ptr: np.ndarray
    run_t0: np.ndarray
    run_rel: np.ndarray
    run_len: np.ndarray
    max_r: int
    max_rk: int
    rr_ptr: np.ndarray
    rr_idx: np.ndarray
    loop_max: int

    @property
    def n(self) -> int:
        return int(self.sup[-1])

    @property
    def xsize(self) -> int:
        return int(self.px[-1])


@numba.njit(cache=True)
def _gather_plan(sup, pi, s, fill, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len):  # pragma: no cover - compiled  # fmt: skip  # noqa: E501
    # Two passes share this code: with fill=False only the counts are returned.
    ns = sup.size - 1
    n = sup[ns]
    snode = np.empty(n, dtype=np.int64)
    for J in range(ns):
        for c in range(sup[J], sup[J + 1]):
            snode[c] = J
    nseg = 0
    nrun = 0
    for J in range(ns):
        if fill:
            seg_ptr[J] = nseg
        k = sup[J + 1] - sup[J]
        r = pi[J + 1] - pi[J] - k
        base = pi[J] + k
        b0 = 0
        while b0 < r:
            K = snode[s[base + b0]]
            b1 = b0 + 1
            while b1 < r and s[base + b1] < sup[K + 1]:
                b1 += 1
            if fill:
                seg_snode[nseg] = K
                seg_b0[nseg] = b0
                seg_b1[nseg] = b1
                run_ptr[nseg] = nrun
            # Merge R[b0:] into the sorted row list of K, starting at R[b0]'s own column.
            q = s[base + b0] - sup[K]
            mK = pi[K + 1] - pi[K]
            prev = -2
            for t in range(b0, r):
                row = s[base + t]
                while q < mK and s[pi[K] + q] < row:
                    q += 1
                if q == mK or s[pi[K] + q] != row:
                    return -1 - J, 0, snode  # not a valid supernodal elimination tree
                if q != prev + 1:
                    if fill:
                        run_t0[nrun] = t
                        run_rel[nrun] = q
                        run_len[nrun] = 1
                    nrun += 1
                elif fill:
                    run_len[nrun - 1] += 1
                prev = q
            nseg += 1
            b0 = b1
    if fill:
        seg_ptr[ns] = nseg
        run_ptr[nseg] = nrun
    return nseg, nrun, snode


@numba.njit(cache=True)
def _rr_plan(sup, pi, px, s, snode, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len, loop_max, idx_dtype):  # pragma: no cover - compiled  # fmt: skip  # noqa: E501
    # The runs of the small supernodes unrolled into one position per entry of Sigma_RR.
    ns = sup.size - 1
    rr_ptr = np.zeros(ns + 1, dtype=np.int64)
    for J in range(ns):
        k = sup[J + 1] - sup[J]
        m = pi[J + 1] - pi[J]
        r = m - k
        rr_ptr[J + 1] = rr_ptr[J] + (r * (r + 1) // 2 if k * m * m <= loop_max else 0)
    rr_idx = np.empty(rr_ptr[ns], dtype=idx_dtype)
    for J in range(ns):
        k = sup[J + 1] - sup[J]
        r = pi[J + 1] - pi[J] - k
        if rr_ptr[J + 1] == rr_ptr[J]:
            continue
        base = pi[J] + k
        for g in range(seg_ptr[J], seg_ptr[J + 1]):
            K = seg_snode[g]
            mK = pi[K + 1] - pi[K]
            srcK = px[K] - sup[K] * mK
            for b in range(seg_b0[g], seg_b1[g]):
                src = srcK + s[base + b] * mK
                o = rr_ptr[J] + b * r - b * (b - 1) // 2 - b  # column b starts at row b
                for q in range(run_ptr[g], run_ptr[g + 1]):
                    for u in range(run_len[q]):
                        t = run_t0[q] + u
                        if t >= b:
                            rr_idx[o + t] = src + run_rel[q] + u
    return rr_ptr, rr_idx


def supernodes(sup, pi, px, s, loop_max: int | None = None) -> Supernodes:
    """Build the :class:`Supernodes` plan from CHOLMOD-style supernodal arrays.

    Parameters
    ----------
    sup, pi, px, s : array_like of int
        First column of each supernode (length ``nsuper + 1``), pointers into the row
        indices ``s`` and into the values, and the row indices themselves.
    loop_max : int, optional
        Supernodes with ``k m^2 <= loop_max`` get the flat gather index ``rr_idx``
        (default :data:`LOOP_MAX`; 0 builds none).

    Raises
    ------
    ValueError
        If the structure is not that of a Cholesky factor (some row of a supernode is
        missing from the ancestor that owns it).
    """
    sup, pi, px, s = (np.ascontiguousarray(a, dtype=np.int64) for a in (sup, pi, px, s))
    e = np.empty(0, dtype=np.int64)
    nseg, nrun, snode = _gather_plan(sup, pi, s, False, e, e, e, e, e, e, e, e)
    if nseg < 0:
        raise ValueError(
            f"Supernode {-1 - nseg} has a row missing from the supernode that owns it: "
            "the arrays do not describe a Cholesky factor."
        )
    seg_ptr = np.empty(sup.size, dtype=np.int64)
    seg_snode, seg_b0, seg_b1 = (np.empty(nseg, dtype=np.int64) for _ in range(3))
    run_ptr = np.empty(nseg + 1, dtype=np.int64)
    run_t0, run_rel, run_len = (np.empty(nrun, dtype=np.int64) for _ in range(3))
    _gather_plan(
        sup, pi, s, True, seg_ptr, seg_snode, seg_b0, seg_b1, run_ptr, run_t0, run_rel, run_len
    )
    k = np.diff(sup)
    r = np.diff(pi) - k
    loop_max = LOOP_MAX if loop_max is None else int(loop_max)
    # Unsigned: numba then skips the negative-index check. 32 bits: half the traffic.
    idx_dtype = np.uint32 if px[-1] < 2**32 else np.uint64
    rr_ptr, rr_idx = _rr_plan(
        sup, pi, px, s, snode, seg_ptr, seg_snode, seg_b0, seg_b1,
        run_ptr, run_t0, run_rel, run_len, loop_max, idx_dtype,
    )  # fmt: skip
    return Supernodes(
        sup, pi, px, s, snode, seg_ptr, seg_snode, seg_b0, seg_b1,
        run_ptr, run_t0, run_rel, run_len,
        int(r.max(initial=0)), int((r * k).max(initial=0)), rr_ptr, rr_idx, loop_max,
    )  # fmt: skip


@numba.njit(cache=True)
def _csc_positions(sup, pi, px, s):  # pragma: no cover - compiled
    ns = sup.size - 1
    n = sup[ns]
    indptr = np.empty(n + 1, dtype=np.int64)
    indptr[0] = 0
    for J in range(ns):
        m = pi[J + 1] - pi[J]
        for c in range(sup[J + 1] - sup[J]):
            j = sup[J] + c
            indptr[j + 1] = indptr[j] + m - c
    nnz = indptr[n]
    indices = np.empty(nnz, dtype=np.int64)
    to_x = np.empty(nnz, dtype=np.int64)
    for J in range(ns):
        m = pi[J + 1] - pi[J]
        for c in range(sup[J + 1] - sup[J]):
            o = indptr[sup[J] + c]
            for i in range(c, m):
                indices[o + i - c] = s[pi[J] + i]
                to_x[o + i - c] = px[J] + c * m + i
    return indptr, indices, to_x


def supernodal_to_csc(sn: Supernodes):
    """CSC structure of the lower factor and where each of its entries sits in ``x``.

    Returns
    -------
    indptr, indices, to_x : ndarray
        Column pointers and sorted row indices of ``L`` (diagonal first), and for each
        entry its position in the supernodal values, so ``data = x[to_x]``.
    """
    return _csc_positions(sn.sup, sn.pi, sn.px, sn.s)


@numba.njit(cache=True)
def _fundamental_supernodes(indptr, indices):  # pragma: no cover - compiled
    sup = supernode_starts(indptr, indices)
    ns = sup.size - 1
    pi = np.empty(ns + 1, dtype=np.int64)
    px = np.empty(ns + 1, dtype=np.int64)
    pi[0] = 0
    px[0] = 0
    for J in range(ns):
        m = indptr[sup[J] + 1] - indptr[sup[J]]
        pi[J + 1] = pi[J] + m
        px[J + 1] = px[J] + m * (sup[J + 1] - sup[J])
    s = np.empty(pi[ns], dtype=np.int64)
    for J in range(ns):
        p0 = indptr[sup[J]]
        for i in range(pi[J + 1] - pi[J]):
            s[pi[J] + i] = indices[p0 + i]
    return sup, pi, px, s


def supernodes_from_csc(indptr, indices):
    """Fundamental supernodes of a lower Cholesky factor given in CSC form.

    Parameters
    ----------
    indptr, indices : ndarray
        Structure of ``L`` with sorted rows, diagonal first in each column.

    Returns
    -------
    sn : Supernodes
    to_x : ndarray
        Position in the supernodal values of each CSC entry: pack with
        ``x = np.zeros(sn.xsize); x[to_x] = data`` and read back with ``Z[to_x]``.
    """
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    sn = supernodes(*_fundamental_supernodes(indptr, indices))
    ip, ix, to_x = supernodal_to_csc(sn)
    if not (np.array_equal(ip, indptr) and np.array_equal(ix, indices)):
        raise ValueError("The CSC structure is not that of a Cholesky factor.")
    return sn, to_x


@numba.njit(cache=True)
def _locate_supernodal(sup, pi, px, s, snode, rows, cols):  # pragma: no cover - compiled
    out = np.empty(rows.size, dtype=np.int64)
    for t in range(rows.size):
        r, c = max(rows[t], cols[t]), min(rows[t], cols[t])
        J = snode[c]
        k = _bisect(s, pi[J], pi[J + 1], r)
        # Column-major dense block of supernode J: (row position, column offset).
        out[t] = -1 if k < 0 else px[J] + (c - sup[J]) * (pi[J + 1] - pi[J]) + k - pi[J]
    return out


def map_pattern_to_supernodes(pattern, perm, sn: Supernodes) -> np.ndarray:
    """Position in the supernodal values of each stored entry of ``pattern``.

    Parameters
    ----------
    pattern : SparsityPattern
        Lower-triangle pattern of ``Q``.
    perm : ndarray
        Fill-reducing permutation ``p`` with ``L L' = Q[p][:, p]``.
    sn : Supernodes
        Structure of ``L``.
    """
    pinv = np.empty_like(perm)
    pinv[perm] = np.arange(perm.size)
    out = _locate_supernodal(
        sn.sup, sn.pi, sn.px, sn.s, sn.snode, pinv[pattern.rows], pinv[pattern.cols]
    )
    if np.any(out < 0):  # pragma: no cover - would be a CHOLMOD contract violation
        raise RuntimeError("An entry of Q is missing from the pattern of its Cholesky factor.")
    return out
