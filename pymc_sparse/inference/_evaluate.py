r"""Evaluating a log density at many points: in an order that keeps warm starts warm.

A Laplace marginal's log density solves for a mode by Newton's method, warm-started
from the last mode found; from a nearby :math:`\theta` it needs fewer steps.  Where the
points are known in advance (importance draws, independence proposals), they are
evaluated along a short path through them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["evaluation_order", "logps"]

#: Largest batch ordered by greedy nearest neighbours (O(n^2)); larger ones are sorted
#: along their first principal axis.
_GREEDY_MAX = 4000


def evaluation_order(x) -> np.ndarray:
    r"""An order of the points ``x`` (n, k) in which each is close to the one before.

    A Laplace marginal's Newton solve starts from the last mode; from a nearby
    :math:`\theta` it needs fewer steps (NYC BYM2: 3.7 against 6.9 ms per evaluation for
    independence proposals in random order).  Greedy nearest neighbour in whitened
    coordinates; the order changes no value, only the work to compute it.
    """
    n = x.shape[0]
    if n < 3:
        return np.arange(n)
    z = x - x.mean(axis=0)
    cov = np.atleast_2d(np.cov(z, rowvar=False))
    w, v = np.linalg.eigh(cov)
    z = (z @ v) / np.sqrt(np.maximum(w, np.finfo(np.float64).tiny * max(w.max(), 1.0)))
    if n > _GREEDY_MAX:
        return np.argsort(z[:, -1], kind="stable")
    left = np.ones(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    cur = int(np.argmin(z[:, -1]))  # start at one end of the main axis
    for t in range(n):
        order[t] = cur
        left[cur] = False
        if t + 1 < n:
            d = np.sum((z - z[cur]) ** 2, axis=1)
            d[~left] = np.inf
            cur = int(np.argmin(d))
    return order


def logps(f, xs):
    """Log densities at the rows of ``xs``, evaluated in :func:`evaluation_order`."""
    out = np.empty(len(xs))
    for i in evaluation_order(np.asarray(xs)):
        out[i] = f.logp(xs[i])
    return out
