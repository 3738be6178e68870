r"""The Gaussian approximation N(x*, H^-1) of x | y, theta, as a result object.

:func:`laplace_posterior` runs the solver of :mod:`pymc_sparse.linalg.laplace.newton` once
and returns the mode, the factor of :math:`H`, constrained marginal variances, draws and
importance log-weights (the latent recovery of :func:`pymc_sparse.sample_latent`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE, NotPositiveDefiniteError
from pymc_sparse.linalg.laplace.newton import (
    NotConvergedError,
    _Inputs,
    _prior_terms,
    _sigma_c_on_h,
    _State,
    laplace_state,
    make_inputs,
)
from pymc_sparse.linalg.laplace.structure import LaplaceStructure

__all__ = ["LaplacePosterior", "laplace_posterior", "laplace_posterior_from_inputs", "sample_prior"]


@dataclass
class LaplacePosterior:
    r"""Gaussian approximation :math:`N(x^*, H^{-1})` of :math:`x \mid y, \theta`.

    Attributes
    ----------
    mode : ndarray (n,)
    factor : Factor
        CHOLMOD factor of :math:`H` at the mode (pattern ``structure.h_pattern``).
    marginal_variances : ndarray (n,)
        :math:`\operatorname{diag}(\Sigma_c)` (selected inverse, kriging-corrected).
    log_marginal : float
        The Laplace approximation of :math:`\log p(y \mid \theta)`.
    eta, W : ndarray (m,)
        Linear predictor and :math:`-\ell''` at the mode.
    structure : LaplaceStructure
    iterations : int
        Newton iterations used.
    """

    mode: np.ndarray
    factor: object
    marginal_variances: np.ndarray
    log_marginal: float
    eta: np.ndarray
    W: np.ndarray
    structure: LaplaceStructure
    iterations: int
    _state: _State

    def sample(self, size=None, rng=None) -> np.ndarray:
        """Draws of shape ``(*size, n)`` from :math:`N(x^*, H^{-1})` given :math:`Cx = 0`.

        ``x = x* + P' L^{-T} z`` (Rue 2001), then conditioning by kriging
        ``x -= U V^{-1} C (x - x*)`` (Rue & Held 2005, 2.3.3).
        """
        rng = np.random.default_rng(rng)
        size = () if size is None else ((size,) if np.ndim(size) == 0 else tuple(size))
        n = self.structure.n
        k = int(np.prod(size)) if size else 1
        dev = self.factor.solve_Lt_perm(rng.standard_normal((n, k)))
        st = self._state
        if st.U is not None:
            dev = dev - st.U @ (st.Vinv @ (self.structure.C @ dev))
        return (self.mode[:, None] + dev).T.reshape((*size, n))

    def log_weights(self, draws) -> np.ndarray:
        r"""Return importance log-weights :math:`\log p(y|x) + \log p(x) - \log q(x)`.

        Densities are normalised on the constrained subspace, so
        ``logsumexp(lw) - log(S)`` estimates :math:`\log p(y \mid \theta)` and the
        weights equal ``exp(log_marginal)`` where the approximation is exact.
        """
        st = self._state
        s, inp = self.structure, st.inp
        X = np.asarray(draws, dtype=np.float64)
        shape = X.shape[:-1]
        X = X.reshape(-1, s.n)
        out = np.empty(X.shape[0])
        ldH = self.factor.logdet() + st.ldV
        for i, x in enumerate(X):
            eta = inp.off + s.A_matvec(inp.a, x)
            ll = s.family.derivs(inp.y, eta, inp.ntr, inp.phi)[0]
            r = x - inp.mu
            dx = x - self.mode
            hv = s.h_pattern.matvec(s.h_values(inp.q, inp.a, self.W), dx)
            out[i] = (
                np.sum(ll)
                - 0.5 * r @ s.q_pattern.matvec(inp.q, r)
                + st.prior.T
                - 0.5 * ldH
                + 0.5 * dx @ hv
            )
        return out.reshape(shape)


def laplace_posterior(
    Q_pattern,
    q_data,
    mu,
    A,
    family,
    y,
    params=None,
    constraint=None,
    *,
    tol=1e-10,
    max_iter=100,
    warm_start=True,
) -> LaplacePosterior:
    r"""Laplace approximation of :math:`x \mid y, \theta` and of :math:`\log p(y|\theta)`.

    Parameters
    ----------
    Q_pattern : SparsityPattern
    q_data : ndarray (nnz,)
        Stored values of the prior precision.
    mu : float or ndarray (n,)
    A : None, scipy.sparse, ndarray, ObservationMatrix or (structure, values)
        Design of :math:`\eta = o + Ax`; a tuple gives the pattern and separate values
        (in ``LaplaceStructure.a_rows/a_cols`` order).
    family : str
        ``"poisson"``, ``"binomial"``, ``"bernoulli"``, ``"negative_binomial"``, ``"normal"``.
    y : ndarray (m,)
    params : dict, optional
        ``offset``, ``exposure``, ``n_trials``, ``dispersion``, ``sigma`` (scalars broadcast).
    constraint : None, "components" or ndarray (k, n)
    tol, max_iter, warm_start
        Newton stops when ``max|step| <= tol (1 + max|x|)``; warm start from the last mode.

    Returns
    -------
    LaplacePosterior

    Raises
    ------
    NotPositiveDefiniteError
        If :math:`Q` (for an intrinsic component: its pivot-reduced block) is not PD.
    NotConvergedError
        If Newton fails (non-finite values, line search failure, ``max_iter``).
    """
    a_values = None
    if isinstance(A, tuple):
        A, a_values = A
    s = LaplaceStructure(Q_pattern, A, family, constraint)
    inp = make_inputs(s, q_data, mu, y, params, a_values)
    return _posterior(s, inp, tol, max_iter, warm_start)


def laplace_posterior_from_inputs(
    structure: LaplaceStructure,
    q_data,
    mu,
    offset,
    a_values,
    y,
    n_trials,
    phi,
    *,
    tol=1e-10,
    max_iter=100,
    warm_start=True,
) -> LaplacePosterior:
    """:func:`laplace_posterior` from a structure and the Op's seven input vectors.

    The inputs are those of :class:`~pymc_sparse.ops.laplace.LaplaceMarginal` (and of a
    ``LaplaceGMRF`` variable's node: ``offset`` already holds ``log(exposure)``), e.g.
    evaluated at a posterior draw of the hyperparameters for latent recovery.
    """
    inp = inputs_from_vectors(structure, q_data, mu, offset, a_values, y, n_trials, phi)
    return _posterior(structure, inp, tol, max_iter, warm_start)


def inputs_from_vectors(structure, q_data, mu, offset, a_values, y, n_trials, phi) -> _Inputs:
    """The solver's inputs from the Op's input vectors (broadcast, contiguous float64)."""
    vecs = [np.ascontiguousarray(v, dtype=np.float64) for v in (q_data, mu, offset, a_values)]
    m = structure.m
    rest = [
        np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.float64), (m,)))
        for v in (y, n_trials, phi)
    ]
    return _Inputs(vecs[0], np.broadcast_to(vecs[1], (structure.n,)).copy(), *vecs[2:], *rest)


def _posterior(s, inp, tol, max_iter, warm_start) -> LaplacePosterior:
    with np.errstate(all="ignore"):
        prior = _prior_terms(s, inp.q, inp.mu)
    if prior is None:
        raise NotPositiveDefiniteError(
            "Q is not positive definite (for an intrinsic component with "
            "constraint='components': its block with one node removed is not). A dense "
            "constraint matrix needs a proper Q; for an ICAR/BYM2 field use "
            "constraint='components'."
        )
    st = laplace_state(s, inp, tol=tol, max_iter=max_iter, warm_start=warm_start)
    if st is None:
        raise NotConvergedError(
            f"The Newton iteration for the mode did not converge in {max_iter} iterations "
            "(or H is not positive definite). Check the data, the offset's scale and that "
            "every intrinsic component is observed."
        )
    sc = _sigma_c_on_h(st)
    return LaplacePosterior(
        mode=st.x,
        factor=st.f,
        marginal_variances=sc[s.h_pattern.diag_index],
        log_marginal=st.value,
        eta=st.eta,
        W=-st.d2,
        structure=s,
        iterations=st.iterations,
        _state=st,
    )


def sample_prior(s: LaplaceStructure, q, mu, size=(), rng=None) -> np.ndarray:
    """Exact draws ``(*size, n)`` from the (constrained) prior of the latent field.

    Unconstrained: ``mu + P' L^{-T} z`` (Rue 2001).  Intrinsic components: draw with the
    pivot-reduced factor (pivot at 0) and re-centre, exact because the density is
    invariant to per-component shifts; proper constrained components: conditioning by
    kriging (Rue & Held 2005, 2.3.3).  NaN-filled if Q is not positive definite.
    """
    rng = np.random.default_rng(rng)
    size = () if size is None else ((size,) if np.ndim(size) == 0 else tuple(size))
    k = int(np.prod(size)) if size else 1
    q = np.asarray(q, np.float64)
    x = np.zeros((s.n, k))
    red = s.reduction(q)
    if red is None:
        f = CACHE.factor(s.q_pattern, q)
        x[:] = f.solve_Lt_perm(rng.standard_normal((s.n, k)))
        Cp, keep = s.C, np.arange(s.n)
    else:
        rpat, rpos, keep, Cp, _ = red
        f = CACHE.factor(rpat, q[rpos])
        x[keep] = f.solve_Lt_perm(rng.standard_normal((keep.size, k)))
    x += np.broadcast_to(np.asarray(mu, np.float64), (s.n,))[:, None]
    if red is not None:
        piv = np.setdiff1d(np.arange(s.n), keep)
        Ci = s.C[np.searchsorted(s.comps, s.labels[piv])]
        x -= Ci.T @ ((Ci @ x) / np.asarray(Ci.sum(axis=1)))
    if Cp is not None and Cp.shape[0]:
        Ur = f.solve(Cp[:, keep].T.toarray()).reshape(keep.size, -1)
        U = np.zeros((s.n, Cp.shape[0]))
        U[keep] = Ur
        x -= U @ np.linalg.solve(np.asarray(Cp @ U), Cp @ x)
    return x.T.reshape((*size, s.n))
