r"""Second-order (O(1/n)) correction of the Laplace approximation of :math:`\log p(y \mid \theta)`.

The Laplace value replaces :math:`\Phi(x) = \log p(y \mid x) + \log p(x \mid \theta)` by its
quadratic expansion at the mode :math:`x^*`.  The prior is Gaussian, so only the
likelihood has higher derivatives: with :math:`e = A(x - x^*)`, :math:`c_i =
\ell_i'''(\eta_i^*)` and :math:`d_i = \ell_i''''(\eta_i^*)`,

.. math::

    \Phi(x) = \Phi(x^*) - \tfrac12 (x-x^*)^\top H (x-x^*)
              + \underbrace{\textstyle\sum_i \tfrac{c_i}{6} e_i^3}_{R_3}
              + \underbrace{\textstyle\sum_i \tfrac{d_i}{24} e_i^4}_{R_4} + \dots

and :math:`p(y \mid \theta) = p_{\mathrm{LA}}(y \mid \theta)\,
E_{N(x^*, \Sigma_c)}[\exp(R_3 + R_4 + \dots)]` exactly, :math:`\Sigma_c` the constrained
covariance (conditioned on :math:`Cx = 0`).  Under that Gaussian :math:`e \sim N(0, S)`,
:math:`S = A \Sigma_c A^\top`.  Expanding the exponential, :math:`E[R_3] = 0` and the
terms of order :math:`1/n` are :math:`E[R_4] + \tfrac12 E[R_3^2]`; Isserlis' theorem
(:math:`E[e_i^4] = 3S_{ii}^2`, :math:`E[e_i^3 e_j^3] = 9 S_{ii} S_{jj} S_{ij} + 6
S_{ij}^3`) gives

.. math::

    \varepsilon = \tfrac18 \sum_i d_i S_{ii}^2
      + \tfrac18 \sum_{ij} c_i c_j S_{ii} S_{jj} S_{ij}
      + \tfrac1{12} \sum_{ij} c_i c_j S_{ij}^3,
    \qquad \log p(y \mid \theta) \approx \log p_{\mathrm{LA}}(y \mid \theta) + \varepsilon .

Sparse evaluation.  :math:`\operatorname{diag}(S)` comes from the selected inverse of
:math:`H` (as for the gradient); the middle term is :math:`\tfrac18 w^\top \Sigma_c w`,
:math:`w = A^\top (c \odot \operatorname{diag} S)`: one solve with the cached factor and
the kriging correction.  The last term needs :math:`S_{ij}` off the diagonal; it is
summed over the pairs of observations whose :math:`S_{ij}` the selected inverse on the
pattern of the Cholesky factor determines (every :math:`(k, l)` with :math:`A_{ik} A_{jl}
\ne 0` on that pattern), and the diagonal otherwise.  :math:`S_{ij}^3` decays fast with
graph distance: on the NYC BYM2 model the off-diagonal part is 0.005-0.01 against a
diagonal part of 15 (the dense check in ``benchmarks/laplace_nyc.py``).

The correction is the leading term of an asymptotic series, not a bound: where the
information per latent value is small its own terms are large (on NYC the quartic and
the two cubic terms are -34, +22 and +16) and the next order need not be negligible.
What moves the hyperparameters is its variation over their posterior; on NYC it brings
the mixing parameter's mean from 0.37 to 0.01 posterior sd of a long field-sampled
reference (``benchmarks/laplace_nyc.py correction``).

References
----------
.. [1] Tierney, L. and Kadane, J. B. (1986). Accurate approximations for posterior
   moments and marginal densities. *J. Amer. Statist. Assoc.* 81, 82-86.
.. [2] Shun, Z. and McCullagh, P. (1995). Laplace approximation of high dimensional
   integrals. *J. R. Stat. Soc. B* 57, 749-760.
.. [3] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. *J. R.
   Stat. Soc. B* 71, 319-392, section 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from pymc_sparse.linalg.laplace.newton import _project, _sigma_c_on_h
from pymc_sparse.linalg.lru import LRUCache
from pymc_sparse.linalg.takahashi import map_pattern_to_factor

__all__ = [
    "SecondOrderCorrection",
    "correction_dense",
    "fourth_derivative",
    "importance_reweight",
    "second_order_correction",
    "state_correction",
]


def fourth_derivative(family, y, eta, n_trials, phi) -> np.ndarray:
    r"""Return :math:`\ell''''(\eta)` of the log-likelihood, per observation.

    Poisson :math:`-e^\eta`; binomial and negative binomial :math:`-v(1 - 6p + 6p^2)`
    (:math:`v = -\ell''`, :math:`p` the family's success probability: the logistic of
    :math:`\eta`, or of :math:`\eta - \log\alpha`); normal 0.
    """
    name = getattr(family, "name", family)
    eta = np.asarray(eta, np.float64)
    if name == "poisson":
        return -np.exp(eta)
    if name in ("binomial", "bernoulli"):
        p = expit(eta)
        n = 1.0 if name == "bernoulli" else np.asarray(n_trials, np.float64)
        return -n * p * (1.0 - p) * (1.0 - 6.0 * p + 6.0 * p * p)
    if name == "negative_binomial":
        a = np.asarray(phi, np.float64)
        p = expit(eta - np.log(a))
        return -(a + y) * p * (1.0 - p) * (1.0 - 6.0 * p + 6.0 * p * p)
    if name == "normal":
        return np.zeros_like(eta)
    raise ValueError(f"No fourth derivative for the family {name!r}.")


def correction_dense(c3, c4, S) -> dict:
    r"""Terms of :math:`\varepsilon` from a dense :math:`S = A\Sigma_c A^\top` (reference).

    Returns a dict with ``quartic`` :math:`\tfrac18\sum d_i S_{ii}^2`, ``cross``
    :math:`\tfrac18 \sum c_i c_j S_{ii}S_{jj}S_{ij}`, ``cube``
    :math:`\tfrac1{12}\sum c_i c_j S_{ij}^3`, ``cube_diagonal`` (its :math:`i = j` part)
    and ``value`` (their sum).  :math:`O(m^2)` memory: tests and diagnostics only.
    """
    S = np.asarray(S, np.float64)
    c3 = np.asarray(c3, np.float64)
    sd = np.diag(S)
    v = c3 * sd
    out = {
        "quartic": float(np.asarray(c4) @ sd**2) / 8.0,
        "cross": float(v @ S @ v) / 8.0,
        "cube": float(c3 @ (S**3) @ c3) / 12.0,
        "cube_diagonal": float(np.sum(c3 * c3 * sd**3)) / 12.0,
    }
    out["value"] = out["quartic"] + out["cross"] + out["cube"]
    return out


@dataclass
class SecondOrderCorrection:
    r"""Value and terms of the second-order correction at one ``theta`` (see module notes).

    Attributes
    ----------
    value : float
        :math:`\varepsilon`, to add to the Laplace log marginal.
    quartic, cross, cube, cube_diagonal : float
        Its terms (``cube`` over the covered pairs, ``cube_diagonal`` its diagonal part).
    n_pairs : int
        Off-diagonal observation pairs included in ``cube`` (each unordered pair once).
    """

    value: float
    quartic: float
    cross: float
    cube: float
    cube_diagonal: float
    n_pairs: int


def second_order_correction(post, *, pairs: str = "factor") -> SecondOrderCorrection:
    r"""Second-order correction :math:`\varepsilon(\theta)` of a Laplace log marginal.

    Parameters
    ----------
    post : LaplacePosterior
        The result of :func:`~pymc_sparse.linalg.laplace.laplace_posterior` (its cached
        factor of :math:`H` is reused).
    pairs : {"factor", "diagonal"}
        Off-diagonal pairs of the :math:`S_{ij}^3` term: those determined by the selected
        inverse on the Cholesky factor's pattern (``"factor"``), or none.

    Returns
    -------
    SecondOrderCorrection
    """
    return state_correction(post._state, pairs)


def state_correction(st, pairs: str = "factor") -> SecondOrderCorrection:
    """:func:`second_order_correction` from a Newton state (``laplace_state``'s result).

    For callers that have the state and no use for a :class:`LaplacePosterior` (whose
    marginal variances cost a selected inverse of their own): ``sample_imh`` and
    ``fit_laplace_grid`` at every point.
    """
    if pairs not in ("factor", "diagonal"):
        raise ValueError(f"`pairs` must be 'factor' or 'diagonal', got {pairs!r}.")
    s, inp = st.s, st.inp
    with np.errstate(all="ignore"):
        c3 = st.d3
        c4 = fourth_derivative(s.family, inp.y, st.eta, inp.ntr, inp.phi)
        plan = sel = None
        if pairs == "factor":
            # One selected inverse on L's pattern serves diag(S) and the pairs.
            plan = _pair_plan(s, st.f)
            sel = st.f.selected_inverse_factor()[plan.h_to_l]
        sc = _sigma_c_on_h(st, sel)
        z = s.diag_a_sigma(inp.a, sc)[0]  # diag(S)
        quartic = float(c4 @ (z * z)) / 8.0
        w = s.A_rmatvec(inp.a, c3 * z)
        cross = float(w @ _project(st.U, st.Vinv, s.C, st.f.solve(w))) / 8.0
        cube_diag = float(np.sum(c3 * c3 * z**3)) / 12.0
        cube, npairs = cube_diag, 0
        if pairs == "factor":
            i, j, sij = _offdiagonal_s(st, plan)
            cube += 2.0 * float(np.sum(c3[i] * c3[j] * sij**3)) / 12.0
            npairs = int(i.size)
    return SecondOrderCorrection(
        value=quartic + cross + cube,
        quartic=quartic,
        cross=cross,
        cube=cube,
        cube_diagonal=cube_diag,
        n_pairs=npairs,
    )


# Pair plans depend on the patterns only (A's and the factor's), not on theta: built once
# per (structure, symbolic analysis); a few per model.
_PAIR_PLANS = LRUCache(8, "laplace correction pair plans")


@dataclass(frozen=True)
class _PairPlan:
    r"""Which terms :math:`A_{ik} A_{jl} P_{kl}` make each covered :math:`S_{ij}`.

    ``i, j``: the covered pairs :math:`i < j`; per term, ``pair`` (its pair), ``ai``/``aj``
    (positions of :math:`A_{ik}`, :math:`A_{jl}` in A's CSR values), ``entry`` (position
    of :math:`P_{kl}` on the factor's pattern) and ``k_node, l_node`` (its nodes, for the kriging
    term); ``h_to_l``: position on the factor's pattern of each stored entry of H.
    """

    i: np.ndarray
    j: np.ndarray
    pair: np.ndarray
    ai: np.ndarray
    aj: np.ndarray
    entry: np.ndarray
    k_node: np.ndarray
    l_node: np.ndarray
    h_to_l: np.ndarray


def _pair_plan(s, f) -> _PairPlan:
    r"""The :class:`_PairPlan` of a structure ``s`` and factor ``f`` (cached by pattern).

    A pair is covered when all :math:`|A_i|\,|A_j|` of its :math:`(k, l)` lie on the
    symmetric pattern of :math:`L` (so the selected inverse determines :math:`S_{ij}`).
    """
    sym = f.symbolic
    key = (id(s), id(sym))
    hit = _PAIR_PLANS.get(key)
    if hit is not None and hit[0] is s and hit[1] is sym:
        return hit[2]
    L = f.L()
    n = s.n
    perm = np.asarray(sym.perm, np.int64)
    cols = np.repeat(np.arange(L.shape[1]), np.diff(L.indptr))
    r, c = perm[L.indices], perm[cols]
    off = r != c
    keys = np.concatenate([r * n + c, (c * n + r)[off]])
    ids = np.concatenate([np.arange(r.size), np.flatnonzero(off)])
    order = np.argsort(keys, kind="stable")
    keys, ids = keys[order], ids[order]
    P0 = sp.csr_matrix((np.ones(keys.size), (keys // n, keys % n)), shape=(n, n))
    indptr, indices = s.a_indptr, s.a_indices
    A0 = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(s.m, n))
    count = sp.triu(A0 @ P0 @ A0.T, k=1).tocoo()
    rowcount = np.diff(indptr)
    keep = count.data == rowcount[count.row] * rowcount[count.col]
    i, j = count.row[keep].astype(np.int64), count.col[keep].astype(np.int64)
    # Every (k, l) of every covered pair: term t of pair p is (t // |A_j|, t % |A_j|).
    nt = rowcount[i] * rowcount[j]
    pair = np.repeat(np.arange(i.size), nt)
    t = np.arange(pair.size) - np.repeat(np.cumsum(nt) - nt, nt)
    width = rowcount[j][pair]
    ai = indptr[i][pair] + t // width
    aj = indptr[j][pair] + t % width
    k_node, l_node = indices[ai], indices[aj]
    entry = ids[np.searchsorted(keys, k_node * n + l_node)]
    h_to_l = map_pattern_to_factor(s.h_pattern, perm, L.indptr, L.indices)
    plan = _PairPlan(i, j, pair, ai, aj, entry, k_node, l_node, h_to_l)
    _PAIR_PLANS.put(key, (s, sym, plan))
    return plan


def _offdiagonal_s(st, plan=None):
    r"""Covered pairs :math:`i < j` of observations and their :math:`S_{ij}`.

    :math:`S_{ij} = \sum_{kl} A_{ik} A_{jl} (\Sigma_c)_{kl}` with :math:`\Sigma_c` on the
    pattern of :math:`L` (Takahashi, kriging-corrected), through the cached
    :func:`_pair_plan`: one gather and one ``bincount`` per call.
    """
    s, a, f = st.s, st.inp.a, st.f
    plan = _pair_plan(s, f) if plan is None else plan
    vals = f.selected_inverse_factor()[plan.entry]
    if st.U is not None:
        vals = vals - np.einsum("ek,ek->e", (st.U @ st.Vinv)[plan.k_node], st.U[plan.l_node])
    sij = np.bincount(plan.pair, a[plan.ai] * a[plan.aj] * vals, minlength=plan.i.size)
    return plan.i, plan.j, sij


def importance_reweight(values, log_correction) -> tuple[np.ndarray, float]:
    r"""Corrected posterior means from draws of :math:`\theta` weighted by :math:`e^{\varepsilon}`.

    Draws from the Laplace-marginal posterior (NUTS, :func:`~pymc_sparse.sample_imh`)
    target :math:`\pi_{\mathrm{LA}}`; weights :math:`w_s \propto
    \exp(\varepsilon(\theta_s))` retarget them to :math:`\pi_{\mathrm{LA}}\,e^\varepsilon`.

    Parameters
    ----------
    values : ndarray (S, ...)
        Draws of any quantity (first axis: draws).
    log_correction : ndarray (S,)
        :math:`\varepsilon(\theta_s)` per draw.

    Returns
    -------
    means : ndarray (...)
        Weighted means.
    ess : float
        Kish's effective sample size :math:`(\sum w)^2 / \sum w^2` of the weights.
    """
    lw = np.asarray(log_correction, np.float64).ravel()
    if not np.all(np.isfinite(lw)):
        raise ValueError("The log corrections must be finite.")
    w = np.exp(lw - lw.max())
    w /= w.sum()
    vals = np.asarray(values, np.float64)
    if vals.shape[0] != w.size:
        raise ValueError(f"{vals.shape[0]} draws but {w.size} log corrections.")
    return np.tensordot(w, vals, axes=1), float(1.0 / np.sum(w * w))
