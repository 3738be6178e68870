r"""Static part of an embedded Laplace model: patterns, index maps and the constraint.

:class:`LaplaceStructure` is fixed when a graph is built (it is the prop of the Laplace
Ops) and holds everything that does not depend on parameter values:

* the pattern of :math:`Q` and that of :math:`H = Q + A^\top W A`, the union of the
  patterns of :math:`Q` and :math:`A^\top A`, computed once, so the factor cache runs one
  symbolic analysis of :math:`H` per model;
* the pattern of :math:`A` (CSR order) and, for every row :math:`k` and every pair of its
  nonzeros :math:`(p, q)` at columns :math:`i \ge j`, the position of :math:`(i, j)` in
  :math:`H`: then :math:`(A^\top W A)_{ij} = \sum a_p a_q W_k` and
  :math:`\operatorname{diag}(A \Sigma A^\top)_k = \sum w_{ij} a_p a_q \Sigma_{ij}` are one
  gather and one ``bincount`` each, with :math:`A`'s values an input;
* the constraint :math:`Cx = 0`: ``"components"`` (one sum-to-zero row per connected
  component of :math:`Q`'s graph with at least two nodes) or a dense ``k x n`` matrix.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.graph import components
from pymc_sparse.linalg.laplace.families import get_family
from pymc_sparse.linalg.lru import LRUCache
from pymc_sparse.linalg.pattern import SparsityPattern, lower_matvec
from pymc_sparse.linalg.validate import design_csr

__all__ = ["LaplaceStructure", "laplace_structure"]

#: Pivot-reduced patterns of intrinsic components, per (structure, pivot set).
_REDUCTIONS = LRUCache(16, "laplace_reductions")


def _as_csr(A, n: int) -> sp.csr_matrix:
    if hasattr(A, "A") and hasattr(A, "ata_pattern"):  # an ObservationMatrix
        A = A.A
    return design_csr(A, n, model="eta = offset + A x")


class LaplaceStructure:
    """Hashable static description of a Laplace model (see the module docstring).

    Parameters
    ----------
    q_pattern : SparsityPattern
    A : None, scipy.sparse matrix, ndarray or ObservationMatrix
        Its pattern (explicit zeros kept) and default values.
    family : str
    constraint : None, "components" or array_like (k, n)
    """

    def __init__(self, q_pattern: SparsityPattern, A, family, constraint=None):
        if not isinstance(q_pattern, SparsityPattern):
            raise TypeError(f"`Q_pattern` must be a SparsityPattern, got {type(q_pattern)}.")
        if not q_pattern.has_full_diagonal:
            raise ValueError(f"{q_pattern!r} must store every diagonal entry.")
        self.q_pattern = q_pattern
        self.n = n = q_pattern.n
        self.family = get_family(family)
        A = _as_csr(A, n)
        self.m = int(A.shape[0])
        self.a_indptr = A.indptr.astype(np.int64)
        self.a_indices = A.indices.astype(np.int64)
        self.a_rows = np.repeat(np.arange(self.m), np.diff(self.a_indptr))
        self.a_cols = self.a_indices
        self.a_default = np.asarray(A.data, dtype=np.float64)
        self._build_pairs()
        self._build_constraint(constraint)
        h = hashlib.blake2b(digest_size=16)
        h.update(q_pattern.key)
        for arr in (np.array([self.m, n]), self.a_indptr, self.a_indices, self._c_bytes):
            h.update(np.ascontiguousarray(arr).view(np.uint8))
        h.update(self.family.name.encode())
        self.key = h.digest()

    # -- construction ---------------------------------------------------------------
    def _build_pairs(self):
        counts = np.diff(self.a_indptr)
        pp, pq, obs = [], [], []
        for c in np.unique(counts[counts > 0]):
            krows = np.flatnonzero(counts == c)
            pos = self.a_indptr[krows][:, None] + np.arange(c)[None, :]
            a, b = np.tril_indices(c)
            pp.append(pos[:, a].ravel())
            pq.append(pos[:, b].ravel())
            obs.append(np.repeat(krows, a.size))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
        self.pair_p, self.pair_q, self.pair_obs = cat(pp), cat(pq), cat(obs)
        ci, cj = self.a_cols[self.pair_p], self.a_cols[self.pair_q]
        ata = SparsityPattern.from_coo(self.n, ci, cj)
        self.h_pattern, self.q_in_h, _ = self.q_pattern.union(ata)
        self.pair_entry = self.h_pattern.index_of(ci, cj)
        self.pair_diag = self.pair_p == self.pair_q
        self.pair_w = np.where(self.pair_diag, 1.0, 2.0)

    def _build_constraint(self, constraint):
        n = self.n
        self.constraint_kind = None
        self.C = None
        self.labels = None
        self._c_bytes = np.zeros(0, np.uint8)
        if constraint is None:
            return
        if isinstance(constraint, str):
            if constraint != "components":
                raise ValueError(
                    "`constraint` must be None, 'components' or a (k, n) array, got "
                    f"{constraint!r}."
                )
            p = self.q_pattern
            k, labels = components(sp.coo_matrix((np.ones(p.nnz), (p.rows, p.cols)), (n, n)))
            sizes = np.bincount(labels, minlength=k)
            comps = np.flatnonzero(sizes > 1)
            row_of = np.full(k, -1)
            row_of[comps] = np.arange(comps.size)
            nodes = np.flatnonzero(row_of[labels] >= 0)
            self.C = sp.csr_matrix(
                (np.ones(nodes.size), (row_of[labels[nodes]], nodes)), shape=(comps.size, n)
            )
            self.constraint_kind = "components"
            self.labels = labels
            self.comps = comps
            last = np.zeros(k, np.int64)
            np.maximum.at(last, labels, np.arange(n))
            self.pivots = last[comps]
            self._c_bytes = np.frombuffer(b"components", np.uint8)
            return
        C = np.asarray(constraint, dtype=np.float64)
        if C.ndim == 1:
            C = C[None, :]
        if C.ndim != 2 or C.shape[1] != n:
            raise ValueError(f"A constraint matrix C must have shape (k, {n}), got {C.shape}.")
        if not np.all(np.isfinite(C)) or np.linalg.matrix_rank(C) < C.shape[0]:
            raise ValueError("The constraint matrix C must be finite with full row rank.")
        self.C = sp.csr_matrix(C)
        self.constraint_kind = "dense"
        self._c_bytes = np.ascontiguousarray(C).view(np.uint8).ravel()

    def _feasible_parts(self):
        # C' (CSR) and C C' (k x k, dense), built once: feasible() runs in every Newton
        # step, and SciPy's transpose builds and checks a new matrix on each call.
        parts = getattr(self, "_ct_cct", None)
        if parts is None:
            Ct = self.C.T.tocsr()
            parts = self._ct_cct = (Ct, np.asarray((self.C @ Ct).toarray()))
        return parts

    # -- numerics ---------------------------------------------------------------------
    def A_csr(self, a) -> sp.csr_matrix:
        """Return ``A`` with values ``a`` (CSR order)."""
        return sp.csr_matrix((a, self.a_indices, self.a_indptr), shape=(self.m, self.n))

    def A_matvec(self, a, x):
        """Return ``A x`` (a ``bincount``: no per-call index checks of a scipy matrix)."""
        return np.bincount(self.a_rows, a * x[self.a_cols], self.m)

    def A_rmatvec(self, a, v):
        """Return ``A' v``."""
        return np.bincount(self.a_cols, a * v[self.a_rows], self.n)

    def q_matvec(self, q, x) -> np.ndarray:
        r"""Return :math:`Q x` from the stored values (one compiled pass, no SciPy objects).

        The Newton solver calls this several times per evaluation; no length checks.
        """
        p = self.q_pattern
        return lower_matvec(p.indptr, p.indices, q, x)

    def h_values(self, q, a, W) -> np.ndarray:
        r"""Return the stored values of :math:`H = Q + A^\top \operatorname{diag}(W) A`."""
        out = np.bincount(
            self.pair_entry,
            weights=a[self.pair_p] * a[self.pair_q] * W[self.pair_obs],
            minlength=self.h_pattern.nnz,
        )
        out[self.q_in_h] += q
        return out

    def diag_a_sigma(self, a, s):
        r""":math:`\operatorname{diag}(A S A^\top)` and :math:`(AS)` on A's nonzeros.

        ``s`` holds a symmetric matrix's stored values on ``h_pattern``.
        """
        e = s[self.pair_entry]
        ap, aq = a[self.pair_p], a[self.pair_q]
        z = np.bincount(self.pair_obs, weights=self.pair_w * ap * aq * e, minlength=self.m)
        M = np.bincount(self.pair_p, weights=aq * e, minlength=a.size)
        off = ~self.pair_diag
        M += np.bincount(self.pair_q[off], weights=(ap * e)[off], minlength=a.size)
        return z, M

    def feasible(self, x) -> np.ndarray:
        """Euclidean projection of ``x`` onto :math:`Cx = 0`."""
        x = np.array(x, dtype=np.float64)
        if self.C is None:
            return x
        Ct, CCt = self._feasible_parts()
        return x - Ct @ np.linalg.solve(CCt, self.C @ x)

    def reduction(self, q):
        r"""Pivot-reduced :math:`Q` when some constrained component is intrinsic, else None.

        Returns ``(pattern, positions in q, kept nodes, C of the proper components,
        sum of log n_C over the intrinsic components)``.  A component is intrinsic when
        :math:`|Q 1| \le 10^{-10}\max|Q_{ii}|` on it.
        """
        if self.constraint_kind != "components" or self.comps.size == 0:
            return None
        p = self.q_pattern
        T = p.lower_csc(q)
        ones = np.ones(self.n)
        rs = np.abs(T @ ones + T.T @ ones - q[p.diag_index])
        k = self.labels.max() + 1
        worst = np.zeros(k)
        np.maximum.at(worst, self.labels, rs)
        scale = np.zeros(k)
        np.maximum.at(scale, self.labels, np.abs(q[p.diag_index]))
        intrinsic = worst[self.comps] <= 1e-10 * scale[self.comps]
        if not intrinsic.any():
            return None
        piv = self.pivots[intrinsic]
        key = (self.key, piv.tobytes())
        red = _REDUCTIONS.get(key)
        if red is None:
            keep = np.ones(self.n, bool)
            keep[piv] = False
            keep = np.flatnonzero(keep)
            pos = p.lower_csc(np.arange(1, p.nnz + 1, dtype=np.float64))[keep][:, keep].tocsc()
            pos.sort_indices()
            rpat = SparsityPattern(keep.size, pos.indptr, pos.indices)
            rpos = np.asarray(pos.data, np.int64) - 1
            Cp = self.C[np.flatnonzero(~intrinsic)]
            sizes = np.bincount(self.labels)[self.comps[intrinsic]]
            red = (rpat, rpos, keep, Cp, float(np.sum(np.log(sizes))))
            _REDUCTIONS.put(key, red)
        return red

    @property
    def n_constraints(self) -> int:
        """Number of rows of C."""
        return 0 if self.C is None else int(self.C.shape[0])

    # -- identity -------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        return isinstance(other, LaplaceStructure) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        c = self.constraint_kind or "none"
        return (
            f"LaplaceStructure(n={self.n}, m={self.m}, family={self.family.name!r}, "
            f"constraint={c}, k={self.n_constraints})"
        )


def laplace_structure(Q_pattern, A=None, family="poisson", constraint=None) -> LaplaceStructure:
    """Build the :class:`LaplaceStructure` of a model (memo-free: it is cheap and hashable)."""
    return LaplaceStructure(Q_pattern, A, family, constraint)
