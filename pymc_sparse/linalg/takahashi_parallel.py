r"""Two-thread schedule of the supernodal selected inversion.

The Takahashi recursion of :func:`~pymc_sparse.linalg.takahashi.takahashi_supernodal`
inverts a supernode :math:`J` from the blocks of its ancestors in the supernodal
elimination tree: two supernodes neither of which is an ancestor of the other never
read each other's blocks.  So once the supernodes near the root (the top separators of
a nested-dissection ordering) are done, the subtrees below them can be inverted
independently.  :func:`parallel_split` cuts the tree into

* ``top``: the supernodes above the cut, run first, on the calling thread;
* two groups of whole subtrees below it, balanced by their work, run at the same time
  on the calling thread and on one fresh ``threading.Thread`` (the kernel releases the
  GIL; no pool is kept, so nothing breaks at ``fork``).

Every supernode does the same operations in the same order as on one thread, so the
values are the same bit for bit.  The work of a supernode with ``k`` columns and ``m``
rows is counted as :math:`k m^2` (its flops up to a constant).  The cut expands the
heaviest subtree of the frontier (the roots at first) into its children while it alone
outweighs half of the frontier, then assigns the frontier's subtrees to the two groups
heaviest first (longest-processing-time rule).

Measured (2-D lattice CAR precision, CHOLMOD nested dissection, 2-core AMD EPYC, load
about 1.3, best of repeats; kernel alone, 1 -> 2 threads): n = 10^4 4.1 -> 2.6 ms,
n = 99,856 87 -> 49 ms, n = 10^6 1.34 -> 0.73 s.  The top separators hold about a
fifth of the work (``k m^2``) but under a tenth of the time (dense BLAS); below about
``5e6`` work (n ~ 4,000) the thread start and the worse balance of an AMD-ordered
plan eat the gain.  On a machine whose other core is busy, two threads lose 10-20 %.
SciPy's OpenBLAS on two threads for the top phase alone saved 2 % at n = 10^6 when
quiet, lost 3x under load (its spinning threads take the core of the second group)
and changes the last bits, so it is not used.

NumPy/numba only, no PyTensor.  The split is computed once per plan and kept in an
:class:`~pymc_sparse.linalg.lru.LRUCache`.
"""

from __future__ import annotations

import os
import threading
import weakref

import numba
import numpy as np

from pymc_sparse.linalg.lru import LRUCache
from pymc_sparse.linalg.threads import NUMERIC_THREADS

__all__ = ["KERNEL_THREADS", "PARALLEL_MIN_WORK", "kernel_threads", "parallel_split", "run_split"]

#: Threads of the selected inversion of a large factor; 1 on a single-core machine.
KERNEL_THREADS = 2 if (os.cpu_count() or 1) >= 2 else 1


def kernel_threads() -> int:
    """Return the kernel's thread count: :data:`KERNEL_THREADS`, or 1 in a forked child.

    A forked process is usually one of several working side by side (``pm.sample``'s
    chains, the workers of :class:`~pymc_sparse.linalg.forkpool.ForkPool`), which
    already occupy the cores: two kernel threads each would oversubscribe them (two
    threads lose 10-20 % against one when the other core is busy).
    """
    return 1 if NUMERIC_THREADS.forked else KERNEL_THREADS


#: Below this much work (sum of ``k m^2`` over the supernodes) the kernel runs on one
#: thread: starting a thread and splitting the tree would not pay.
PARALLEL_MIN_WORK = 5e6
#: Neither group may hold less than this share of the work, else one thread is used.
MIN_SHARE = 0.1

# One entry per plan, keyed by the id of its `sup` array.  The split depends on `sup`,
# `pi` and `s` only; the entry holds weak references to them (a plan at n = 10^6 holds
# hundreds of MB that must not outlive its factor) and is used only while all three
# are the very same arrays.
_SPLITS = LRUCache(8, "takahashi parallel splits")


@numba.njit(cache=True)
def _split(sup, pi, s, snode):  # pragma: no cover - compiled
    # (top, group 0, group 1, work of each); empty orders when the tree is not postordered.
    ns = sup.size - 1
    e = np.empty(0, dtype=np.int64)
    work = np.zeros(3)
    parent = np.full(ns, -1, dtype=np.int64)
    first = np.arange(ns)
    count = np.ones(ns, dtype=np.int64)
    cum = np.zeros(ns + 1)
    nchild = np.zeros(ns + 1, dtype=np.int64)
    for J in range(ns):
        k = sup[J + 1] - sup[J]
        m = pi[J + 1] - pi[J]
        cum[J + 1] = cum[J] + k * m * m
        if m > k:
            P = snode[s[pi[J] + k]]
            if P <= J:
                return e, e, e, work
            parent[J] = P
            first[P] = min(first[P], first[J])
            count[P] += count[J]
            nchild[P + 1] += 1
    # Postordered: the subtree of J is the contiguous range first[J]..J.
    for J in range(ns):
        if J - first[J] + 1 != count[J]:
            return e, e, e, work
    cptr = np.cumsum(nchild)
    child = np.empty(max(ns, 1), dtype=np.int64)
    fill = cptr[:-1].copy()
    for J in range(ns):
        if parent[J] >= 0:
            child[fill[parent[J]]] = J
            fill[parent[J]] += 1
    top = np.zeros(ns, dtype=np.bool_)
    front = np.empty(ns, dtype=np.int64)
    nf = 0
    for J in range(ns):
        if parent[J] < 0:
            front[nf] = J
            nf += 1
    while nf > 0:
        h = 0
        tot = 0.0
        for i in range(nf):
            wi = cum[front[i] + 1] - cum[first[front[i]]]
            tot += wi
            if wi > cum[front[h] + 1] - cum[first[front[h]]]:
                h = i
        H = front[h]
        if cum[H + 1] - cum[first[H]] <= 0.5 * tot or cptr[H + 1] == cptr[H]:
            break
        top[H] = True
        front[h] = front[nf - 1]
        nf -= 1
        for q in range(cptr[H], cptr[H + 1]):
            front[nf] = child[q]
            nf += 1
    # label[J]: 0 top, 1 or 2 the group; descending J keeps ancestors first in each.
    label = np.zeros(ns, dtype=np.int64)
    wf = np.empty(nf)
    for i in range(nf):
        wf[i] = cum[front[i] + 1] - cum[first[front[i]]]
    for i in np.argsort(-wf):
        g = 1 if work[1] <= work[2] else 2
        work[g] += wf[i]
        label[first[front[i]] : front[i] + 1] = g
    for J in range(ns):
        if top[J]:
            work[0] += cum[J + 1] - cum[J]
    desc = np.arange(ns - 1, -1, -1)
    lab = label[desc]
    return desc[lab == 0], desc[lab == 1], desc[lab == 2], work


def _same(refs, sn) -> bool:
    return refs[0]() is sn.sup and refs[1]() is sn.pi and refs[2]() is sn.s


def parallel_split(sn, min_work: float = PARALLEL_MIN_WORK):
    """Orders ``(top, group0, group1)`` for a two-thread inversion, or ``None``.

    Parameters
    ----------
    sn : Supernodes
        Plan of the factor.  Its supernodes must be postordered (every subtree of the
        supernodal elimination tree a contiguous range ending at its root), as CHOLMOD's
        are; otherwise, or when the work is below ``min_work`` or one group would get
        less than :data:`MIN_SHARE` of it, ``None`` (run on one thread).
    min_work : float
        Least total work (sum of ``k m^2``) worth two threads.

    Returns
    -------
    tuple of ndarray or None
        Supernode indices in the order to invert them: ``top`` first, then the two
        groups concurrently.  Cached per plan.
    """
    entry = _SPLITS.get(id(sn.sup))
    if entry is None or not _same(entry[0], sn):
        top, g0, g1, work = _split(sn.sup, sn.pi, sn.s, sn.snode)
        total = float(work.sum())
        # Plain floats: this check runs on every call, also for the smallest factors.
        balanced = g1.size > 0 and min(work[1], work[2]) >= MIN_SHARE * total
        refs = (weakref.ref(sn.sup), weakref.ref(sn.pi), weakref.ref(sn.s))
        entry = (refs, (top, g0, g1), total, balanced)
        _SPLITS.put(id(sn.sup), entry)
    _refs, orders, total, balanced = entry
    if not balanced or total < min_work:
        return None
    return orders


def run_split(kernel, orders) -> int:
    """Run ``kernel(order)`` on ``top``, then on the two groups on two threads.

    Parameters
    ----------
    kernel : callable
        ``kernel(order) -> int`` status (non-zero: a failed pivot); releases the GIL.
    orders : tuple of ndarray
        From :func:`parallel_split`.

    Returns
    -------
    int
        The statuses of the three phases or-ed together.  An exception raised in the
        worker thread is raised again here, after both groups finish.
    """
    top, g0, g1 = orders
    status = kernel(top)
    other = [0, None]

    def work():
        try:
            other[0] = kernel(g1)
        except BaseException as exc:  # re-raised on the calling thread
            other[1] = exc

    t = threading.Thread(target=work, name="pymc_sparse-takahashi", daemon=True)
    t.start()
    try:
        status |= kernel(g0)
    finally:
        t.join()
    if other[1] is not None:
        raise other[1]
    return status | other[0]
