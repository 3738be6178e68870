r"""Intrinsic (rank-deficient) structure matrices, component by component.

The ICAR structure matrix :math:`R = D - W` of a graph with connected components
:math:`C_1, \dots, C_k` has null space spanned by the component indicators
:math:`1_{C_c}` (a node without neighbours, a *singleton*, is a component whose row of
:math:`R` is zero).  Everything the package needs about such a matrix is computed here
from the *reduced* matrix :math:`R_{-p}`: :math:`R` with one *pivot* node :math:`p_c`
per component removed (the component's last node), which is positive definite:

* log generalised determinant (matrix-tree theorem, per component)

  .. math:: \log|R_{C}|_* = \log n_C + \log\det R_{C,-p},

* exact draws of the sum-to-zero constrained ICAR: draw :math:`y \sim N(0, R_{-p}^{-1})`,
  set :math:`y_p = 0`, subtract each component's mean.  The improper density
  :math:`\propto \exp(-x^\top R x/2)` is invariant to per-component shifts, so fixing
  :math:`x_p = 0` and re-centring gives exactly the sum-to-zero constrained law, whose
  covariance is the Moore-Penrose inverse :math:`R^+`.  This is conditioning by kriging
  (Rue & Held 2005, 2.3.3) on the constraint :math:`1_C^\top x = 0` applied to a proper
  GMRF that shares :math:`R`'s conditional structure, with no jitter and therefore no
  jitter bias.

References
----------
.. [1] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*. Chapman & Hall/CRC,
   2.3.3 and 3.2.
.. [2] Freni-Sterrantino, A., Ventrucci, M. and Rue, H. (2018). A note on intrinsic
   conditional autoregressive models for disconnected graphs. *Spatial and
   Spatio-temporal Epidemiology* 26, 25-34.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.graph import components
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.precision.graph import degrees

__all__ = ["GraphComponents"]


@dataclass(frozen=True, eq=False)
class GraphComponents:
    """Connected-component bookkeeping of a validated adjacency matrix.

    Attributes
    ----------
    n : int
    labels : ndarray of int
        Component of each node.
    sizes : ndarray of int
        Number of nodes per component.
    """

    W: sp.csc_matrix
    n: int
    labels: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_adjacency(cls, W: sp.csc_matrix) -> GraphComponents:
        """Components of an already validated adjacency matrix."""
        k, labels = components(W)
        return cls(W, W.shape[0], labels, np.bincount(labels, minlength=k))

    @property
    def n_components(self) -> int:
        """Number of connected components, singletons included."""
        return int(self.sizes.size)

    @cached_property
    def singleton(self) -> np.ndarray:
        """Boolean mask of nodes without neighbours."""
        return self.sizes[self.labels] == 1

    @cached_property
    def proper_components(self) -> np.ndarray:
        """Indices of components with at least two nodes."""
        return np.flatnonzero(self.sizes > 1)

    @cached_property
    def pivots(self) -> np.ndarray:
        """The last node of each component with at least two nodes."""
        last = np.zeros(self.n_components, dtype=np.int64)
        np.maximum.at(last, self.labels, np.arange(self.n))
        return last[self.proper_components]

    @cached_property
    def reduced_nodes(self) -> np.ndarray:
        """Non-singleton nodes that are not pivots, in node order."""
        keep = ~self.singleton
        keep[self.pivots] = False
        return np.flatnonzero(keep)

    @cached_property
    def structure(self) -> sp.csc_matrix:
        """:math:`R = D - W`."""
        return (sp.diags(degrees(self.W)) - self.W).tocsc()

    @cached_property
    def reduced(self) -> tuple[SparsityPattern, np.ndarray] | None:
        """Pattern and values of :math:`R_{-p}` (None if every node is a singleton)."""
        idx = self.reduced_nodes
        if idx.size == 0:
            return None
        R = self.structure[idx][:, idx]
        return SparsityPattern.from_scipy(R)

    def _reduced_factor(self):
        pattern, data = self.reduced
        f = CACHE.factor(pattern, data)
        f.raise_if_failed()  # cannot happen for a valid graph; keep the error readable
        return f

    @cached_property
    def log_generalized_det(self) -> float:
        r""":math:`\sum_C \log|R_C|_*` over components with at least two nodes."""
        if self.reduced is None:
            return 0.0
        return float(
            np.sum(np.log(self.sizes[self.proper_components])) + self._reduced_factor().logdet()
        )

    def sample_constrained(
        self, size: tuple, rng: np.random.Generator, singletons: str
    ) -> np.ndarray:
        r"""Draws of the unit ICAR with every component summing to zero, shape ``(*size, n)``.

        ``singletons="iid"``: nodes without neighbours are N(0, 1); ``"zero"``: exactly 0.
        """
        m = int(np.prod(size)) if size else 1
        x = np.zeros((m, self.n))
        if self.reduced is not None:
            f = self._reduced_factor()
            z = rng.standard_normal((self.reduced_nodes.size, m))
            x[:, self.reduced_nodes] = f.solve_Lt_perm(z).T
            x = self.center(x)
        if singletons == "iid":
            s = np.flatnonzero(self.singleton)
            x[:, s] = rng.standard_normal((m, s.size))
        return x.reshape((*size, self.n))

    def center(self, x: np.ndarray) -> np.ndarray:
        """Subtract each non-singleton component's mean (last axis); singletons untouched."""
        x = np.array(x, dtype=np.float64)
        flat = x.reshape(-1, self.n)
        means = self._component_sums(flat) / self.sizes
        means[:, self.sizes == 1] = 0.0
        flat -= means[:, self.labels]
        # Subtracting the mean leaves a residual sum of up to n/2 ulps (a further tiny
        # correction spread over all entries is rounded away); move it to one node per
        # component, so each component sums to zero to a few ulps for any n.
        proper = self.proper_components
        if proper.size:
            flat[:, self.pivots] -= self._component_sums(flat)[:, proper]
        return flat.reshape(x.shape)

    @cached_property
    def _big_segments(self) -> list[np.ndarray]:
        order = np.argsort(self.labels, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(self.sizes)])
        big = np.flatnonzero(self.sizes > 256)
        return [(c, order[bounds[c] : bounds[c + 1]]) for c in big]

    def _component_sums(self, flat: np.ndarray) -> np.ndarray:
        """Per-component sums of each row; pairwise summation for large components."""
        sums = np.zeros((flat.shape[0], self.n_components))
        np.add.at(sums.T, self.labels, flat.T)  # sequential: fine for small components
        for c, idx in self._big_segments:
            # Pairwise summation (error O(log n) ulps) needs each row contiguous; a fancy
            # index can return column-major data, which numpy would sum sequentially.
            sums[:, c] = np.ascontiguousarray(flat[:, idx]).sum(axis=1)
        return sums

    @cached_property
    def constrained_variances(self) -> np.ndarray:
        r"""Exact :math:`\operatorname{diag}(R^+)` per node (1 for singletons).

        With :math:`M` the reduced inverse padded by zeros at the pivots and
        :math:`P_C = I - 1 1^\top / n_C` the centring, :math:`R_C^+ = P_C M P_C`, so

        .. math:: (R_C^+)_{ii} = M_{ii} - 2 (M1)_i / n_C + 1^\top M 1 / n_C^2,

        which needs the diagonal of :math:`M` (selected inverse) and one solve.
        """
        var = np.ones(self.n)
        if self.reduced is None:
            return var
        f = self._reduced_factor()
        idx = self.reduced_nodes
        Mdiag = np.zeros(self.n)
        Mdiag[idx] = f.marginal_variances()
        M1 = np.zeros(self.n)
        M1[idx] = f.solve(np.ones(idx.size))
        tot = np.bincount(self.labels, weights=M1, minlength=self.n_components)
        nc = self.sizes[self.labels].astype(np.float64)
        v = Mdiag - 2.0 * M1 / nc + tot[self.labels] / nc**2
        return np.where(self.singleton, 1.0, v)
