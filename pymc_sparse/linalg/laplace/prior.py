r"""Prior-side terms of the sparse Laplace marginal, cached per structure.

With :math:`V_Q = C Q^{-1} C^\top` (the proper constrained components), the prior enters
the Laplace approximation as

.. math::

    T(Q, \mu) = \tfrac12\log\det Q + \tfrac12\log\det V_Q
        + \tfrac12 (C\mu)^\top V_Q^{-1} C\mu

(an intrinsic component: :math:`\tfrac12\log\det Q_{C,-p} + \log n_C`, see
:mod:`~pymc_sparse.linalg.laplace.newton`), with gradient :math:`\tfrac12 w \odot
(Q^{-1})_{ij}` on Q's pattern plus the terms of :math:`V_Q`.  None of it depends on the
observations or on :math:`A`: when ``marginalize_laplace`` integrates a BYM2 field,
:math:`Q = \operatorname{blockdiag}(R, I)` is constant (:math:`\sigma, \rho` enter
through :math:`A`), and a prior :math:`Q = \tau R` changes only by a factor.  So the
factor of :math:`Q`, its selected inverse and the kriging terms are kept per structure
(:class:`_PriorCore`) and reused, rescaled, for every ``q = c q_ref`` (:math:`c > 0`).

References
----------
.. [1] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields: Theory and
   Applications*. Chapman & Hall/CRC, 2.3.3 (conditioning by kriging).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.laplace.structure import LaplaceStructure
from pymc_sparse.linalg.lru import LRUCache

__all__: list[str] = []  # internal to the Laplace solver; pms.clear_cache() empties _PRIORS

_EPS = float(np.finfo(np.float64).eps)
#: Prior-side factorisation per structure (:class:`_PriorCore`), reused while ``q`` stays
#: a positive multiple of the ``q`` it was built at; 8 structures.
_PRIORS = LRUCache(8, "laplace_prior_cores")


@dataclass
class _PriorCore:
    r"""Factor of :math:`Q` (or of its pivot-reduced block) at a reference ``q``.

    For :math:`q = c\, q_{ref}` with :math:`c > 0` everything scales:
    :math:`\log\det(cQ) = \log\det Q + d \log c` (``d`` the factor's order),
    :math:`(cQ)^{-1} = Q^{-1}/c`, so :math:`U_r = Q_r^{-1}C_r^\top` and :math:`V` scale by
    :math:`1/c`.  Reducing the pivots of intrinsic components is scale-invariant too.
    A constant :math:`Q` (BYM2 through ``marginalize_laplace``: :math:`\sigma, \rho`
    enter through :math:`A`) and :math:`Q = \tau R` therefore cost one factorisation and
    one selected inverse of the prior for the whole run.
    """

    q: np.ndarray
    jref: int
    factor: object
    dim: int
    rpos: np.ndarray | None  # positions in q of the factor's entries (None: all)
    keep: np.ndarray | None  # latent nodes kept by the reduction (None: all)
    Cp: object | None  # C of the proper constrained components
    log_sizes: float
    Ur: np.ndarray | None  # Q_r^{-1} C_r' (kept nodes x k)
    ldV: float
    Vi: np.ndarray | None

    def scale_of(self, q) -> float | None:
        """Return ``c > 0`` with ``q == c q_ref`` to 8 ulp in every entry, else None."""
        if q is self.q or np.array_equal(q, self.q):
            return 1.0
        c = q[self.jref] / self.q[self.jref]
        if not (np.isfinite(c) and c > 0.0):
            return None
        if np.all(np.abs(q - c * self.q) <= 8.0 * _EPS * np.abs(q)):
            return float(c)
        return None


@dataclass
class _Prior:
    """Prior-side terms: T, its gradient wrt mu, and what its gradient wrt q needs."""

    T: float
    gmu: np.ndarray
    core: _PriorCore
    scale: float
    q_pattern: object
    U: np.ndarray | None = None  # Q^{-1} Cp' on all n nodes (at this scale)
    Vi: np.ndarray | None = None
    u: np.ndarray | None = None

    @property
    def factor(self):
        """Factor of Q (or its reduced block) at the core's reference values."""
        return self.core.factor

    def gq(self) -> np.ndarray:
        """Gradient of T wrt q: (1/2) w S on the factor's entries (selected inverse)."""
        core, qp = self.core, self.q_pattern
        f = core.factor
        sel = 0.5 * f.pattern.symmetric_weights * f.selected_inverse() / self.scale
        gqc = 0.0
        if self.U is not None:
            w = qp.symmetric_weights
            U, u = self.U, self.u
            gqc = -0.5 * w * _lowrank_on_pattern(qp, U @ self.Vi, U)
            gqc += 0.5 * w * u[qp.rows] * u[qp.cols]
        if core.rpos is None:
            return sel + gqc
        out = np.zeros(qp.nnz) if np.ndim(gqc) == 0 else np.array(gqc, dtype=np.float64)
        out[core.rpos] += sel
        return out


# -- small numeric helpers ------------------------------------------------------------
def _lowrank_on_pattern(pattern, Z, U):
    """``(Z U')_{ij}`` on the stored entries (``Z, U``: ``(n, k)``)."""
    return np.einsum("ek,ek->e", Z[pattern.rows], U[pattern.cols])


def _chol_logdet_inv(V):
    """``log det V`` and ``V^{-1}`` of a small SPD matrix; NaN if not SPD."""
    try:
        L = np.linalg.cholesky(V)
    except np.linalg.LinAlgError:
        return np.nan, np.full_like(V, np.nan)
    Li = np.linalg.inv(L)
    return 2.0 * np.sum(np.log(np.diag(L))), Li.T @ Li


# -- prior terms ----------------------------------------------------------------------
def _build_core(s: LaplaceStructure, q) -> _PriorCore | None:
    """Factorise Q (reduced for intrinsic components) and its kriging terms at ``q``."""
    red = s.reduction(q)
    if red is None:
        f = CACHE.factor(s.q_pattern, q)
        rpos, keep, Cp, log_sizes = None, None, s.C, 0.0
    else:
        rpat, rpos, keep, Cp, log_sizes = red
        f = CACHE.factor(rpat, q[rpos])
    if not f.ok or not np.isfinite(f.logdet()):
        return None
    Ur, ldV, Vi = None, 0.0, None
    if Cp is not None and Cp.shape[0]:
        Cr = Cp if keep is None else Cp[:, keep]
        Ur = np.atleast_2d(f.solve(Cr.T.toarray()).reshape(Cr.shape[1], -1))
        ldV, Vi = _chol_logdet_inv(np.asarray(Cr @ Ur))
    q = np.array(q, dtype=np.float64)
    jref = int(np.argmax(np.abs(q)))
    dim = f.pattern.n
    return _PriorCore(q, jref, f, dim, rpos, keep, Cp, log_sizes, Ur, ldV, Vi)


def _prior_core(s: LaplaceStructure, q):
    """``(core, c)`` with ``q = c q_core`` (cached per structure), or None if not PD."""
    core = _PRIORS.get(s.key)
    if core is not None:
        c = core.scale_of(q)
        if c is not None:
            return core, c
    core = _build_core(s, q)
    if core is None:
        return None
    _PRIORS.put(s.key, core)
    return core, 1.0


def _prior_terms(s: LaplaceStructure, q, mu) -> _Prior | None:
    r""":math:`T(Q, \mu)` and its gradient; None if Q (reduced) is not positive definite.

    Built from the cached :class:`_PriorCore` when ``q`` is a positive multiple ``c``
    of its reference values (``c = 1``: bitwise the terms of a fresh factorisation).
    """
    hit = _prior_core(s, q)
    if hit is None:
        return None
    core, c = hit
    # (1/2) log|Q_C|_* + (1/2) log n_C = (1/2) log det Q_{C,-p} + log n_C for an intrinsic
    # component: the limit of the proper formula as its null eigenvalue goes to 0.
    logc = float(np.log(c))
    T = 0.5 * (core.factor.logdet() + core.dim * logc) + core.log_sizes
    prior = _Prior(0.0, np.zeros(s.n), core, c, s.q_pattern)
    if core.Ur is not None:
        Cp = core.Cp
        Vi = core.Vi * c
        b = Cp @ mu
        Vib = Vi @ b
        T += 0.5 * (core.ldV - Vi.shape[0] * logc) + 0.5 * b @ Vib
        U = np.zeros((s.n, Cp.shape[0]))
        U[core.keep if core.keep is not None else slice(None)] = core.Ur / c
        prior.U, prior.Vi, prior.u = U, Vi, U @ Vib
        prior.gmu = np.asarray(Cp.T @ Vib, dtype=np.float64)
    prior.T = float(T)
    return prior
