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
structure, with *chord* steps (the solve with an earlier factor of :math:`H`) while they
contract fast, so a nearby theta usually needs one factorisation of :math:`H`
(:func:`_newton`).  The prior terms :math:`T` are cached per structure and reused when
:math:`Q` is constant or only rescaled (:mod:`~pymc_sparse.linalg.laplace.prior`).

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
:math:`H` (and, once per cached prior, of :math:`Q`), ``k + 1`` solves, whatever the number
of hyperparameters.

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

from dataclasses import dataclass

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.laplace.families import FAMILIES, LaplaceFamily
from pymc_sparse.linalg.laplace.prior import (
    _chol_logdet_inv,
    _lowrank_on_pattern,
    _Prior,
    _prior_terms,
)
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
#: Solved states per (structure, tol): the value and gradient Ops share one Newton run.
#: Each entry holds the 2 most recent states, found by comparing the inputs (a memcmp,
#: cheaper than a digest of every input twice per evaluation); 4 entries.
_STATES = LRUCache(4, "laplace_states")
_STATES_PER_KEY = 2
#: Chord steps (with a factor of H from an earlier point) per Newton solve, at most.
_MAX_CHORD = 30
#: A chord step must shrink the previous step at least this much, else H is refactorised.
_CHORD_RATE = 0.5
#: ... and reach the tolerance within this many further steps at that rate.
_CHORD_HORIZON = 8


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

    def arrays(self):
        return (self.q, self.mu, self.off, self.a, self.y, self.ntr, self.phi)

    def same_as(self, other: _Inputs) -> bool:
        """Bitwise equality of every input (NaNs included)."""
        return all(
            a is b or (a.shape == b.shape and a.tobytes() == b.tobytes())
            for a, b in zip(self.arrays(), other.arrays())
        )


@dataclass
class _Point:
    """Objective value and family derivatives at one latent vector."""

    x: np.ndarray
    eta: np.ndarray
    derivs: tuple  # (ll, d1, d2, d3) per observation
    qr: np.ndarray  # Q (x - mu)
    val: float


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


def _point(s, inp, x) -> _Point:
    eta = inp.off + s.A_matvec(inp.a, x)
    derivs = s.family.derivs(inp.y, eta, inp.ntr, inp.phi)
    r = x - inp.mu
    qr = s.q_matvec(inp.q, r)
    return _Point(x, eta, derivs, qr, float(np.sum(derivs[0]) - 0.5 * r @ qr))


def _line_search(s, inp, P: _Point, d, slope):
    """Backtracking (Armijo) on the concave objective; ``(t, point)`` or None."""
    t = 1.0
    for _ in range(40):
        new = _point(s, inp, P.x + t * d)
        if np.isfinite(new.val) and new.val >= P.val + 1e-4 * t * slope - 1e-12 * abs(P.val):
            return t, new
        t *= 0.5
    return None


def _newton(s: LaplaceStructure, inp: _Inputs, x0, tol, max_iter, chord=None):
    r"""Newton with chord steps; ``(point, factor, U, Vi, ldV, factorisations)`` or None.

    A step solves with the factor of H at the current point (Newton) or at an earlier
    point (chord: the previous evaluation's mode, or an earlier iterate).  Chord steps
    converge linearly at the rate :math:`\|I - H_{old}^{-1} H\|`, small when theta or x
    moved little, and cost one solve instead of a factorisation: they go on while each
    shrinks the step at least ``_CHORD_RATE``-fold and the tolerance is within
    ``_CHORD_HORIZON`` steps at the observed rate.  The first step from the warm start is
    the first-order IFT prediction of the new mode.  Convergence is only declared on a
    Newton step, ``max|d| <= tol (1 + max|x|)`` with H factorised at ``x``: the criterion,
    the mode and the factor returned are those of plain Newton, which a converged warm
    start reaches with one factorisation of H.
    """
    P = _point(s, inp, s.feasible(x0))
    if not np.isfinite(P.val):
        return None
    f, U, Vi, ldV = (None, None, None, 0.0) if chord is None else (*chord, 0.0)
    fresh, n_fact, n_chord, prev = False, 0, 0, np.inf
    while True:
        if f is None:
            if n_fact == max_iter:
                return None
            f = CACHE.factor(s.h_pattern, s.h_values(inp.q, inp.a, -P.derivs[2]))
            n_fact += 1
            if not f.ok:
                return None
            U, Vi, ldV = _kriging(f, s.C)
            fresh = True
        g = s.A_rmatvec(inp.a, P.derivs[1]) - P.qr
        d = _project(U, Vi, s.C, f.solve(g))
        ok = np.all(np.isfinite(d))
        size = float(np.max(np.abs(d), initial=0.0)) if ok else np.inf
        limit = tol * (1.0 + np.max(np.abs(P.x), initial=0.0))
        if fresh and not ok:
            return None
        if fresh and size <= limit:
            return P, f, U, Vi, ldV, n_fact
        # > 0: d is an ascent direction of the concave objective.  With a constraint, g
        # holds a large multiple of C' (the Lagrange multiplier) that d is orthogonal to;
        # its rounding would swamp g'd near the mode, so take the tangential part of g.
        slope = float((g if s.C is None else s.feasible(g)) @ d)
        ls = None
        if ok and size <= limit:  # a converged chord step: take it whole, then verify
            new = _point(s, inp, P.x + d)
            ls = (1.0, new) if np.isfinite(new.val) else None
        elif ok and (fresh or slope > 0):
            ls = _line_search(s, inp, P, d, slope)
        if ls is None:
            if fresh:
                return None
            f = None  # the stale factor failed: refactorise here
            continue
        t, P = ls
        if not fresh:
            n_chord += 1
            rate = size / prev  # 0 on the first step (nothing to judge the rate by yet)
            steps_left = np.log(limit / size) / np.log(rate) if 0 < rate < 1 else 0.0
            # The error left after this step is about rate * size: once that is well
            # inside the tolerance, the Newton step at a fresh factor will pass it.
            if (
                size <= limit
                or (0 < rate < 1 and rate * size <= 0.25 * limit)
                or t < 1.0
                or rate > _CHORD_RATE
                or steps_left > _CHORD_HORIZON
                or n_chord >= _MAX_CHORD
            ):
                f = None
        prev, fresh = size, False


def laplace_state(s: LaplaceStructure, inp: _Inputs, tol=1e-10, max_iter=100, warm_start=True):
    """Solve for the mode and evaluate the Laplace marginal; None on failure (cached).

    Floating-point warnings are silenced: an overflowing trial step of the line search or
    a parameter outside its support is a failure (None, NaN in graphs), not a warning.
    """
    with np.errstate(all="ignore"):
        return _laplace_state(s, inp, tol, max_iter, warm_start)


def _cached_state(key, inp):
    for st in _STATES.get(key, ()):
        if st.inp.same_as(inp):
            return st
    return None


def _laplace_state(s, inp, tol, max_iter, warm_start):
    key = (s.key, tol)
    st = _cached_state(key, inp)
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
    P, f, U, Vi, ldV, it = res
    ll, d1, d2, d3 = P.derivs
    # The cache is found by comparing inputs, and callers may reuse their buffers (PyTensor
    # storage, finite differences in place): keep a copy.
    inp = _Inputs(*(np.array(v) for v in inp.arrays()))
    value = P.val + prior.T - 0.5 * f.logdet() - 0.5 * ldV
    if not np.isfinite(value):
        return None
    st = _State(s, inp, P.x, P.eta, ll, d1, d2, d3, f, U, Vi, ldV, prior, value, it)
    _MODES.put(s.key, (P.x.copy(), f, U, Vi))
    _STATES.put(key, [st, *_STATES.get(key, ())][:_STATES_PER_KEY])
    return st


def _sigma_c_on_h(st: _State, selinv=None):
    r"""Constrained covariance :math:`\Sigma_c` on the pattern of H (selected inverse).

    ``selinv``: :math:`H^{-1}` on H's pattern when the caller has it (e.g. gathered from
    the selected inverse on the factor's pattern), else the factor's own.
    """
    sc = (st.f.selected_inverse() if selinv is None else selinv).copy()
    if st.U is not None:
        sc -= _lowrank_on_pattern(st.s.h_pattern, st.U @ st.Vinv, st.U)
    return sc


def laplace_gradient(st: _State, mode_term: bool = True, wrt_q: bool = True):
    """Gradient of the Laplace marginal wrt ``(q, mu, offset, a, phi)`` (see module notes).

    ``mode_term=False`` drops the movement of the mode (for tests that must see it fail).
    ``wrt_q=False`` returns zeros for ``q`` instead of its gradient (for a ``Q`` that is a
    constant of the graph, whose gradient nothing reads): it skips the selected inverse
    of the prior and the ``O(nnz)`` terms on Q's pattern.
    """
    with np.errstate(all="ignore"):
        return _laplace_gradient(st, mode_term, wrt_q)


def _laplace_gradient(st: _State, mode_term: bool, wrt_q: bool = True):
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
    if wrt_q:
        w = qp.symmetric_weights
        gq = -0.5 * w * r[qp.rows] * r[qp.cols]  # Phi: -(1/2) r' dQ r
        gq += -0.5 * w * sc[s.q_in_h]  # G: -(1/2) tr(Sc dQ)
        gq -= _pair(qp, v, r)  # mode movement: -v' dQ r
        gq += st.prior.gq()
    else:
        gq = np.zeros(qp.nnz)
    gmu = s.q_matvec(inp.q, r + v) + st.prior.gmu
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
