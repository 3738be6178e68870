r"""Connected components of a sparse graph, and which of them are bipartite.

The one component counter of the package: the CAR table (singular points at
:math:`\alpha = \pm 1`), the ICAR constraints and the public
``pms.connected_components`` all call it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

__all__ = ["bipartite_components", "components"]


def components(W) -> tuple[int, np.ndarray]:
    """Return the number of connected components and each node's component label.

    Labels are numbered in order of first appearance, so node 0 is in component 0.
    Only the pattern of ``W`` (symmetric, any diagonal) matters.
    """
    k, labels = csgraph.connected_components(sp.csr_matrix(W), directed=False)
    return int(k), np.asarray(labels, dtype=np.int64)


def bipartite_components(W, labels: np.ndarray) -> int:
    r"""Count the components with at least one edge whose graph is bipartite.

    A bipartite component makes :math:`D - \alpha W` singular at :math:`\alpha = -1`.
    Two-colouring along a breadth-first tree: bipartite iff no edge joins equal colours.
    """
    W = sp.csr_matrix(W)
    W = W - sp.diags(W.diagonal())
    coo = sp.triu(W, 1).tocoo()
    colour = np.full(W.shape[0], -1)
    count = 0
    for comp in range(int(labels.max()) + 1 if labels.size else 0):
        nodes = np.flatnonzero(labels == comp)
        if nodes.size == 1:
            continue
        order, pred = csgraph.breadth_first_order(W, nodes[0], directed=False)
        colour[order[0]] = 0
        for v in order[1:]:
            colour[v] = 1 - colour[pred[v]]
        m = labels[coo.row] == comp
        if np.all(colour[coo.row[m]] != colour[coo.col[m]]):
            count += 1
    return count
