r"""Plain-loop Takahashi steps for the small supernodes of the supernodal kernel.

For a supernode with ``k`` columns :math:`c` and ``r`` rows :math:`R` below its
diagonal block, :func:`~pymc_sparse.linalg.takahashi.takahashi_supernodal` computes,
with :math:`W = L_{cc}^{-1}` and :math:`Y = L_{Rc} W`,

.. math::

    \Sigma_{Rc} = -\Sigma_{RR}\, Y, \qquad
    \Sigma_{cc} = W^\top W - Y^\top \Sigma_{Rc}.

On a 2-D lattice most supernodes are a single column with a handful of rows, and for
them BLAS calls, and even a copy of :math:`\Sigma_{RR}` into a dense work block, cost
more than the arithmetic.  The steps here read the lower triangle of
:math:`\Sigma_{RR}` in place, through the flat index ``rr_idx`` of the
:class:`~pymc_sparse.linalg.supernodes.Supernodes` plan, and use each entry
:math:`z = \Sigma_{tb}` (:math:`t \ge b`) at once for both halves of the symmetric
product: :math:`A_{t,:} \mathrel{+}= z Y_{b,:}` and, for :math:`t \ne b`,
:math:`A_{b,:} \mathrel{+}= z Y_{t,:}`, where :math:`A = \Sigma_{RR} Y = -\Sigma_{Rc}`.
One pass over the entries instead of a copy and a second read.

The loops are compiled with the ``reassoc`` and ``contract`` fast-math flags only, so
the dot products vectorise while NaN and infinities still propagate.  A diagonal entry
of :math:`L` that is not positive (a failed pivot, NaN) is reported to the caller,
which then returns NaN everywhere.

Measured on a 32 x 32 lattice CAR precision (n = 1,024, 777 supernodes, 708 of one
column; AMD EPYC, one core): the kernel took 0.29 ms with a copy of :math:`\Sigma_{RR}`
walked run by run and 0.13 ms with these loops, and ``pms.logdet`` value + gradient went
from 4.4 to 2.9 CHOLMOD factorisations (``benchmarks/small_n.py logdet``).

numba's disk cache of :func:`~pymc_sparse.linalg.takahashi.takahashi_supernodal` holds
a compiled copy of these functions and is keyed on that module's file only: after
editing this one, touch ``takahashi.py`` (or clear ``__pycache__``).

References
----------
.. [1] Lin, L., Yang, C., Meza, J. C., Lu, J., Ying, L. and E, W. (2011). SelInv --
   an algorithm for selected inversion of a sparse symmetric matrix. ACM Trans.
   Math. Softw. 37(4), 40.
"""

from __future__ import annotations

import numba

__all__: list[str] = []

# Reassociation (vectorised reductions) and fused multiply-adds, but no assumption that
# values are finite: a NaN in the factor must reach the result.
_FASTMATH = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _small_k1(p, r, x, Z, idx, o, Y, A):  # pragma: no cover - compiled
    # One column j: W = 1/L_jj, Y = L_Rj / L_jj, Sigma_jj = W^2 + Y'A.
    d = x[p]
    ok = d > 0.0
    if not ok:
        d = 1.0
    w = 1.0 / d
    q = p + 1
    for t in range(r):
        Y[t] = x[q + t] * w
        A[t] = 0.0
    for b in range(r):
        yb = Y[b]
        acc = Z[idx[o]] * yb
        for t in range(b + 1, r):
            z = Z[idx[o + t - b]]
            A[t] += z * yb
            acc += z * Y[t]
        A[b] += acc
        o += r - b
    s = 0.0
    for t in range(r):
        Z[q + t] = -A[t]
        s += Y[t] * A[t]
    Z[p] = w * w + s
    return ok


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _diagonal_and_y(k, m, p, x, Z, W, Y):  # pragma: no cover - compiled
    # Sigma_cc = W'W into Z and Y = L_Rc W (column-major, leading dimension r), W = L_cc^-1:
    # the start of every supernode with a flat index, looped or BLAS (for a dozen
    # columns, dpotri and dtrsm cost more in calls than in arithmetic).
    r = m - k
    ok = True
    # W = L_cc^{-1} (lower, column-major, leading dimension k) by forward substitution,
    # the reciprocals of the pivots first (a failed one is replaced, never divided by).
    for c in range(k):
        d = x[p + c * m + c]
        if not d > 0.0:
            ok = False
            d = 1.0
        W[c + c * k] = 1.0 / d
    for c in range(k):
        for i in range(c + 1, k):
            acc = 0.0
            for q_ in range(c, i):
                acc += x[p + q_ * m + i] * W[q_ + c * k]
            W[i + c * k] = -acc * W[i + i * k]
    # Sigma_cc = W' W (lower triangle).
    for j in range(k):
        for i in range(j, k):
            acc = 0.0
            for q_ in range(i, k):
                acc += W[q_ + i * k] * W[q_ + j * k]
            Z[p + j * m + i] = acc
    # Y = L_Rc W, column by column.
    for c in range(k):
        yc = c * r
        for t in range(r):
            Y[yc + t] = 0.0
        for q_ in range(c, k):
            wqc = W[q_ + c * k]
            src = p + q_ * m + k
            for t in range(r):
                Y[yc + t] += x[src + t] * wqc
    return ok


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _small_fused(k, m, p, x, Z, idx, o, W, Y, A, zc):  # pragma: no cover - compiled
    # k > 1 columns.  Y and A are column-major (r x k, leading dimension r), so each
    # update below is a unit-stride loop over rows; zc holds one gathered column.
    r = m - k
    ok = _diagonal_and_y(k, m, p, x, Z, W, Y)
    for t in range(r * k):
        A[t] = 0.0
    # A = Sigma_RR Y: each column of Sigma_RR's lower triangle gathered once, then used
    # for both of its halves in every column of Y.
    for b in range(r):
        nb = r - b
        for u in range(nb):
            zc[u] = Z[idx[o + u]]
        o += nb
        for c in range(k):
            cb = c * r + b
            yb = Y[cb]
            acc = zc[0] * yb
            for u in range(1, nb):
                A[cb + u] += zc[u] * yb
                acc += zc[u] * Y[cb + u]
            A[cb] += acc
    # Sigma_Rc = -A; Sigma_cc += Y' A (lower triangle).
    for c in range(k):
        q = p + c * m + k
        for t in range(r):
            Z[q + t] = -A[c * r + t]
    for j in range(k):
        for i in range(j, k):
            acc = 0.0
            for t in range(r):
                acc += Y[i * r + t] * A[j * r + t]
            Z[p + j * m + i] += acc
    return ok


@numba.njit(cache=True, nogil=True)
def _gather_idx(r, idx, o, Z, SRR):  # pragma: no cover - compiled
    # Lower triangle of Sigma_RR (column-major, leading dimension r) by the flat index.
    for b in range(r):
        d = b * r
        for t in range(b, r):
            SRR[d + t] = Z[idx[o + t - b]]
        o += r - b
