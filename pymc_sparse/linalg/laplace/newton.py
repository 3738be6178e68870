r"""Sparse embedded Laplace approximation: mode, value and gradient by the IFT.

Model: :math:`x \sim N(\mu, Q^{-1})` (optionally constrained to :math:`Cx = 0`), linear
predictor :math:`\eta = o + Ax`, observations :math:`y_k \mid \eta_k \sim p(y_k \mid
\eta_k, \phi_k)` (:mod:`~pymc_sparse.linalg.laplace.families`).  With
:math:`\Phi(x) = \sum_k \ell_k(\eta_k) - \tfrac12 (x-\mu)^\top Q (x-\mu)`, its constrained
maximiser :math:`x^*` and :math:`H = Q + A^\top W A`, :math:`W = -\operatorname{diag}
(\ell'')` at :math:`x^*`, the Laplace approximation is

.. math::

    \log p(y \mid \theta) \approx \Phi(x^*) + T(Q, \mu)
        - \tfrac12 \log\det H - \tfrac12 \log\det(C H^{-1} C^\top),

with :math:`T = \tfrac12\log\det Q + \tfrac12\log\det V_Q + \tfrac12 (C\mu)^\top V_Q^{-1}
C\mu`, :math:`V_Q = C Q^{-1} C^\top` (no constraint: :math:`T = \tfrac12 \log\det Q`).  The
ratio of the constrained prior to the constrained Gaussian approximation is taken on the
same subspace, so the Jacobian :math:`|CC^\top|^{1/2}` cancels.  For an *intrinsic*
component (its block of :math:`Q` has null vector :math:`1`, as for ICAR), the proper
formula's limit as the null eigenvalue goes to 0 replaces that component's terms by
:math:`\tfrac12\log|Q_C|_* + \tfrac12\log n_C = \tfrac12\log\det Q_{C,-p} + \log n_C`
(matrix-tree theorem): :math:`Q` with one pivot node removed, no mean term.

Inner solver: Newton with a backtracking (Armijo) line search; each step solves
:math:`H d = \nabla\Phi` with the cached factor of :math:`H` and projects :math:`d` onto
:math:`Cd = 0` by kriging, :math:`d \leftarrow d - U V^{-1} C d`, :math:`U = H^{-1}C^\top`,
:math:`V = CU` (Rue & Held 2005, 2.3.3).  Warm start from the last mode of the same
structure.

Gradient (implicit function theorem).  With :math:`\Sigma_c = H^{-1} - U V^{-1} U^\top`
(the constrained covariance), :math:`d(\log\det H + \log\det V) = \operatorname{tr}
(\Sigma_c\, dH)`, so the explicit part of :math:`G = -\tfrac12\log\det H - \tfrac12 \log
\det V` needs :math:`\Sigma_c` only on the pattern of :math:`H` (one selected inverse)
and :math:`z = \operatorname{diag}(A \Sigma_c A^\top)`.  The mode moves as :math:`dx^* =
\Sigma_c\, \partial_\theta \nabla_x \Phi\, d\theta` and :math:`\partial G / \partial x =
\tfrac12 A^\top (z \odot \ell''')`, so with the single adjoint solve :math:`v = \Sigma_c
\tfrac12 A^\top(z \odot \ell''')` the mode-movement term is the explicit derivative of
:math:`v^\top \nabla_x \Phi(x, \theta)` (Margossian et al. 2020).  :math:`\Phi`'s own
dependence through :math:`x^*` vanishes at the optimum.  Cost: one selected inverse of
:math:`H` (and of :math:`Q`), ``k + 1`` solves, whatever the number of hyperparameters.

References
----------
.. [1] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. J. R. Stat.
   Soc. B 71, 319-392.
.. [2] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields: Theory and
   Applications*. Chapman & Hall/CRC, 2.3.3 (conditioning by kriging), 2.4.
.. [3] Margossian, C. C., Vehtari, A., Simpson, D. and Agrawal, R. (2020). Hamiltonian
   Monte Carlo using an adjoint-differentiated Laplace approximation: Bayesian inference
   for latent Gaussian models and beyond. NeurIPS 33.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.laplace.families import FAMILIES, LaplaceFamily
from pymc_sparse.linalg.laplace.structure import LaplaceStructure, laplace_structure
from pymc_sparse.linalg.lru import LRUCache

__all__ = [
    "FAMILIES",
    "LaplaceFamily",
    "LaplaceStructure",
    "NotConvergedError",
    "laplace_gradient",
    "laplace_state",
    "laplace_structure",
    "make_inputs",
]

_LOG_2PI = float(np.log(2.0 * np.pi))
#: Last mode per structure and the factor of H there (warm start); 8 structures.
_MODES = LRUCache(8, "laplace_modes")
#: Solved states per (structure, inputs): the value and gradient Ops share one Newton run.
_STATES = LRUCache(4, "laplace_states")


class NotConvergedError(RuntimeError):
    """The inner Newton iteration did not converge."""


@dataclass
class _Inputs:
    q: np.ndarray
    mu: np.ndarray
    off: np.ndarray
    a: np.ndarray
    y: np.ndarray
    ntr: np.ndarray
    phi: np.ndarray

    def digest(self) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for v in (self.q, self.mu, self.off, self.a, self.y, self.ntr, self.phi):
            h.update(np.ascontiguousarray(v).view(np.uint8))
        return h.digest()


@dataclass
class _Prior:
    """Prior-side terms: T, its gradient wrt mu, and what its gradient wrt q needs."""

    T: float
    gmu: np.ndarray
    factor: object  # of Q, or of Q with the intrinsic pivots removed
    rpos: np.ndarray | None  # positions in q of that factor's entries (None: all)
    gq_constraint: np.ndarray | float

    def gq(self) -> np.ndarray:
        """Gradient of T wrt q: (1/2) w S on the factor's entries (selected inverse)."""
        sel = 0.5 * self.factor.pattern.symmetric_weights * self.factor.selected_inverse()
        if self.rpos is None:
            return sel + self.gq_constraint
        out = np.array(self.gq_constraint, dtype=np.float64)  # length nnz(Q) here
        out[self.rpos] += sel
        return out


@dataclass
class _State:
    """Everything at the mode needed by the value, the gradient and the posterior."""

    s: LaplaceStructure
    inp: _Inputs
    x: np.ndarray
    eta: np.ndarray
    ll: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    d3: np.ndarray
    f: object  # Factor of H
    U: np.ndarray | None  # H^-1 C'
    Vinv: np.ndarray | None
    ldV: float
    prior: _Prior
    value: float
    iterations: int


# -- small numeric helpers ------------------------------------------------------------
def _pair(pattern, u, v):
    """Per stored entry (i, j): ``u_i v_j + u_j v_i`` off the diagonal, ``u_i v_i`` on it."""
    r, c = pattern.rows, pattern.cols
    out = u[r] * v[c] + u[c] * v[r]
    out[pattern.is_diag] *= 0.5
    return out


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
def _prior_terms(s: LaplaceStructure, q, mu) -> _Prior | None:
    r""":math:`T(Q, \mu)` and its gradient; None if Q (reduced) is not positive definite."""
    red = s.reduction(q)
    qp = s.q_pattern
    if red is None:
        f = CACHE.factor(qp, q)
        if not f.ok:
            return None
        T = 0.5 * f.logdet()
        Cp, rpos, n_idx = s.C, None, None
    else:
        rpat, rpos, keep, Cp, log_sizes = red
        f = CACHE.factor(rpat, q[rpos])
        if not f.ok:
            return None
        # (1/2) log|Q_C|_* + (1/2) log n_C = (1/2) log det Q_{C,-p} + log n_C: the limit of
        # the proper formula as the component's null eigenvalue goes to 0.
        T = 0.5 * f.logdet() + log_sizes
        n_idx = keep
    solve = f.solve
    gmu = np.zeros(s.n)
    gq = 0.0
    if Cp is not None and Cp.shape[0]:
        Cr = Cp if n_idx is None else Cp[:, n_idx]
        Ur = np.atleast_2d(solve(Cr.T.toarray()).reshape(Cr.shape[1], -1))
        V = Cr @ Ur
        ldV, Vi = _chol_logdet_inv(np.asarray(V))
        b = Cp @ mu
        Vib = Vi @ b
        T += 0.5 * ldV + 0.5 * b @ Vib
        U = np.zeros((s.n, Cp.shape[0]))
        U[n_idx if n_idx is not None else slice(None)] = Ur
        u = U @ Vib
        w = qp.symmetric_weights
        gq = -0.5 * w * _lowrank_on_pattern(qp, U @ Vi, U) + 0.5 * w * u[qp.rows] * u[qp.cols]
        gmu = Cp.T @ Vib
    if rpos is not None and np.ndim(gq) == 0:
        gq = np.zeros(qp.nnz)
    return _Prior(float(T), np.asarray(gmu, dtype=np.float64), f, rpos, gq)


# -- the inner Newton solver ----------------------------------------------------------
def _kriging(f, C):
    """``U = H^{-1} C'`` and ``V^{-1} = (C U)^{-1}`` (None without a constraint)."""
    if C is None or C.shape[0] == 0:
        return None, None, 0.0
    U = f.solve(C.T.toarray()).reshape(C.shape[1], -1)
    ldV, Vi = _chol_logdet_inv(np.asarray(C @ U))
    return U, Vi, ldV


def _project(U, Vi, C, d):
    if U is None:
        return d
    return d - U @ (Vi @ (C @ d))


def _objective(s, fam, inp, x):
    eta = inp.off + s.A_matvec(inp.a, x)
    r = x - inp.mu
    ll = fam.derivs(inp.y, eta, inp.ntr, inp.phi)[0]
    return float(np.sum(ll) - 0.5 * r @ s.q_pattern.matvec(inp.q, r))


def _line_search(s, fam, inp, x, d, val, slope):
    """Backtracking (Armijo) on the concave objective; ``(t, value)`` or None."""
    t = 1.0
    for _ in range(40):
        new = _objective(s, fam, inp, x + t * d)
        if np.isfinite(new) and new >= val + 1e-4 * t * slope - 1e-12 * abs(val):
            return t, new
        t *= 0.5
    return None


def _newton(s: LaplaceStructure, inp: _Inputs, x0, tol, max_iter, chord=None):
    fam = s.family
    x = s.feasible(x0)
    val = _objective(s, fam, inp, x)
    if chord is not None and np.isfinite(val):
        # Warm start at nearby theta: one step with the previous mode's H (still cached),
        # x + Sigma_c(old) grad Phi(x; theta_new).  This is the first-order IFT prediction
        # of the new mode, so Newton starts O(dtheta^2) away and saves a factorisation.
        f_old, U_old, Vi_old = chord
        eta = inp.off + s.A_matvec(inp.a, x)
        d1 = fam.derivs(inp.y, eta, inp.ntr, inp.phi)[1]
        g = s.A_rmatvec(inp.a, d1) - s.q_pattern.matvec(inp.q, x - inp.mu)
        d = _project(U_old, Vi_old, s.C, f_old.solve(g))
        slope = float(g @ d)
        if np.all(np.isfinite(d)) and slope > 0:
            ls = _line_search(s, fam, inp, x, d, val, slope)
            if ls is not None:
                x, val = x + ls[0] * d, ls[1]
    for it in range(1, max_iter + 1):
        eta = inp.off + s.A_matvec(inp.a, x)
        ll, d1, d2, d3 = fam.derivs(inp.y, eta, inp.ntr, inp.phi)
        f = CACHE.factor(s.h_pattern, s.h_values(inp.q, inp.a, -d2))
        if not f.ok or not np.isfinite(val):
            return None
        U, Vi, ldV = _kriging(f, s.C)
        g = s.A_rmatvec(inp.a, d1) - s.q_pattern.matvec(inp.q, x - inp.mu)
        d = _project(U, Vi, s.C, f.solve(g))
        if not np.all(np.isfinite(d)):
            return None
        if np.max(np.abs(d), initial=0.0) <= tol * (1.0 + np.max(np.abs(x), initial=0.0)):
            return x, eta, (ll, d1, d2, d3), f, U, Vi, ldV, it
        slope = float(g @ d)  # > 0: d is an ascent direction of the concave objective
        ls = _line_search(s, fam, inp, x, d, val, slope)
        if ls is None:
            return None
        x, val = x + ls[0] * d, ls[1]
    return None


def laplace_state(s: LaplaceStructure, inp: _Inputs, tol=1e-10, max_iter=100, warm_start=True):
    """Solve for the mode and evaluate the Laplace marginal; None on failure (cached).

    Floating-point warnings are silenced: an overflowing trial step of the line search or
    a parameter outside its support is a failure (None, NaN in graphs), not a warning.
    """
    with np.errstate(all="ignore"):
        return _laplace_state(s, inp, tol, max_iter, warm_start)


def _laplace_state(s, inp, tol, max_iter, warm_start):
    key = (s.key, inp.digest(), tol)
    st = _STATES.get(key)
    if st is not None:
        return st
    prior = _prior_terms(s, inp.q, inp.mu)
    if prior is None or not np.isfinite(prior.T):
        return None
    last = _MODES.get(s.key) if warm_start else None
    x0, chord = (inp.mu.copy(), None) if last is None else (last[0], last[1:])
    if not np.all(np.isfinite(x0)):
        x0, chord = inp.mu.copy(), None
    res = _newton(s, inp, x0, tol, max_iter, chord)
    if res is None and last is not None:
        res = _newton(s, inp, inp.mu.copy(), tol, max_iter)  # a bad warm start: start over
    if res is None:
        return None
    x, eta, (ll, d1, d2, d3), f, U, Vi, ldV, it = res
    r = x - inp.mu
    value = (
        float(np.sum(ll))
        - 0.5 * float(r @ s.q_pattern.matvec(inp.q, r))
        + prior.T
        - 0.5 * f.logdet()
        - 0.5 * ldV
    )
    if not np.isfinite(value):
        return None
    st = _State(s, inp, x, eta, ll, d1, d2, d3, f, U, Vi, ldV, prior, value, it)
    _MODES.put(s.key, (x.copy(), f, U, Vi))
    _STATES.put(key, st)
    return st


def _sigma_c_on_h(st: _State):
    r"""Constrained covariance :math:`\Sigma_c` on the pattern of H (selected inverse)."""
    sc = st.f.selected_inverse().copy()
    if st.U is not None:
        sc -= _lowrank_on_pattern(st.s.h_pattern, st.U @ st.Vinv, st.U)
    return sc


def laplace_gradient(st: _State, mode_term: bool = True):
    """Gradient of the Laplace marginal wrt ``(q, mu, offset, a, phi)`` (see module notes).

    ``mode_term=False`` drops the movement of the mode (for tests that must see it fail).
    """
    with np.errstate(all="ignore"):
        return _laplace_gradient(st, mode_term)


def _laplace_gradient(st: _State, mode_term: bool):
    s, inp, fam = st.s, st.inp, st.s.family
    x, d1, d2, d3 = st.x, st.d1, st.d2, st.d3
    W = -d2
    sc = _sigma_c_on_h(st)
    z, M = s.diag_a_sigma(inp.a, sc)  # diag(A Sc A'), (A Sc) on A's nonzeros
    gx = 0.5 * s.A_rmatvec(inp.a, z * d3)
    v = _project(st.U, st.Vinv, s.C, st.f.solve(gx)) * float(mode_term)
    u = s.A_matvec(inp.a, v)
    r = x - inp.mu
    qp = s.q_pattern
    w = qp.symmetric_weights
    gq = -0.5 * w * r[qp.rows] * r[qp.cols]  # Phi: -(1/2) r' dQ r
    gq += -0.5 * w * sc[s.q_in_h]  # G: -(1/2) tr(Sc dQ)
    gq -= _pair(qp, v, r)  # mode movement: -v' dQ r
    gq += st.prior.gq()
    gmu = qp.matvec(inp.q, r + v) + st.prior.gmu
    goff = d1 + 0.5 * z * d3 + u * d2
    ar, ac = s.a_rows, s.a_cols
    # Phi: l'_k x_j; G: -W_k (A Sc)_kj + (1/2) z_k l'''_k x_j; mode: v_j l'_k + u_k l''_k x_j.
    ga = (d1[ar] + 0.5 * (z * d3)[ar] + (u * d2)[ar]) * x[ac] - W[ar] * M + v[ac] * d1[ar]
    dl, dl1, dl2 = fam.param_derivs(inp.y, st.eta, inp.ntr, inp.phi)
    gphi = dl + 0.5 * z * dl2 + u * dl1
    return gq, gmu, goff, ga, gphi


# -- inputs and the public helper -------------------------------------------------------
def _vec(v, length, name, default=None):
    if v is None:
        v = default
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(length, float(arr))
    if arr.shape != (length,):
        raise ValueError(f"`{name}` must be a scalar or have length {length}, got {arr.shape}.")
    return np.ascontiguousarray(arr)


def make_inputs(s: LaplaceStructure, q_data, mu, y, params=None, a_values=None) -> _Inputs:
    """Validate and broadcast numeric inputs (``params``: offset, exposure, n_trials, ...)."""
    params = dict(params or {})
    unknown = set(params) - {"offset", "exposure", "n_trials", "dispersion", "sigma"}
    if unknown:
        raise ValueError(f"Unknown parameters {sorted(unknown)} for the Laplace model.")
    fam = s.family
    m = s.m
    own = {"n_trials"} if fam.uses_trials else set()
    own |= {fam.param} if fam.param else set()
    stray = {k for k, v in params.items() if v is not None} & (
        {"n_trials", "dispersion", "sigma"} - own
    )
    if stray:
        raise ValueError(f"{sorted(stray)} do not apply to the {fam.name!r} family.")
    if fam.uses_trials and params.get("n_trials") is None:
        raise ValueError(f"The {fam.name!r} family needs `n_trials`.")
    off = _vec(params.get("offset"), m, "offset", 0.0)
    if params.get("exposure") is not None:
        if not fam.log_link:
            raise ValueError(f"`exposure` needs a log-link family, not {fam.name!r}; use offset.")
        off = off + np.log(_vec(params["exposure"], m, "exposure"))
    ntr = _vec(params.get("n_trials"), m, "n_trials", 1.0)
    phi = _vec(params.get(fam.param) if fam.param else None, m, fam.param or "param", 1.0)
    if fam.param and params.get(fam.param) is None:
        raise ValueError(f"The {fam.name!r} family needs `{fam.param}`.")
    a = s.a_default if a_values is None else _vec(a_values, s.a_default.size, "A values")
    y = _vec(y, m, "y")
    fam.check(y, ntr, phi)
    q = np.ascontiguousarray(q_data, dtype=np.float64)
    if q.shape != (s.q_pattern.nnz,):
        raise ValueError(f"`q_data` must have shape ({s.q_pattern.nnz},), got {q.shape}.")
    return _Inputs(q, _vec(mu, s.n, "mu"), off, np.ascontiguousarray(a), y, ntr, phi)
