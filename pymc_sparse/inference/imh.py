r"""Exact MCMC for a few hyperparameters: independence Metropolis-Hastings.

(The mixture proposal and its fit live in :mod:`pymc_sparse.inference._mixture`, the
order of evaluation in :mod:`pymc_sparse.inference._evaluate`.)

Once a latent Gaussian field is integrated out
(:class:`~pymc_sparse.distributions.marginal.MarginalGMRFNormal`), what remains to sample
is a handful of hyperparameters :math:`\theta` (a precision scale, a dependence
parameter, a noise sd).  Their posterior is low-dimensional, so an *independence*
sampler, whose proposals :math:`\theta' \sim q` ignore the current state, can be both
exact and cheap: each step costs one log-density evaluation without a gradient (for the
marginal model one sparse factorisation), against one gradient per leapfrog step, and
several steps per draw, for NUTS.  It is the MCMC counterpart of INLA's grid over
:math:`\theta`.

The independence step accepts :math:`\theta'` with probability

.. math:: \min\!\left(1, \frac{w(\theta')}{w(\theta)}\right), \qquad
          w(\theta) = \frac{\pi(\theta)}{q(\theta)},

which leaves the posterior :math:`\pi` invariant whatever :math:`q`.  If :math:`w` is
bounded, :math:`\sup w = M`, that chain is uniformly ergodic with rate at least
:math:`1 - 1/M` (Mengersen and Tweedie 1996).  Where :math:`q` is too light, a state of
large :math:`w` is held for many steps; every ``rw_every``-th iteration (default 4)
therefore also takes one random-walk Metropolis step (Gaussian, covariance
:math:`2.38^2 S/k`, Roberts et al. 1997), which moves the chain on from such states.
Both steps leave :math:`\pi` invariant, so a fixed cycle of them does.

The proposal, in the sampler's unconstrained space (PyMC's transforms), is fitted by
adaptive importance sampling:

1. MAP by L-BFGS with exact gradients, and the Hessian at the MAP by central differences
   of the gradient: a Laplace approximation :math:`N(\hat\theta, H^{-1})`, widened to a
   multivariate t (``df``) with scale ``inflate**2`` :math:`H^{-1}`.
2. Two rounds of ``tune // 2`` draws from the current proposal.  All draws so far are
   weighted by :math:`\pi` over the mixture of the proposals used (Cornuet et al. 2012),
   the weights truncated (Ionides 2008), and a mixture of ``components`` Gaussians fitted
   to them by EM becomes the next proposal (each component a t with ``df``).  A mixture
   follows skewed posteriors that a single t misses, such as a noise sd weakly separated
   from a field's own small-scale variance (its log has a long left tail).  EM
   components that collapse onto a few draws are dropped or have their covariance
   repaired (eigenvalues floored), so a degenerate fit never raises.  When the last
   proposal's own importance efficiency (Kish ESS / draws) is below 10 %, up to two
   more rounds are run: an unlucky seed refits instead of keeping a poor proposal.
3. The kept draws use the defensive mixture :math:`0.9\,q_{\text{fit}} +
   0.1\,t_3(m, 16S)` (:math:`m, S` the weighted mean and covariance; Hesterberg 1995):
   the wide component bounds :math:`w` where the fit is too light.  Each chain starts from
   a draw of the weighted sample (sampling-importance-resampling), close to stationarity.

The kept draws use one fixed kernel, so they are an exact Markov chain; the tuning draws
are discarded, as NUTS's adaptation is.  Above ``max_dim`` unconstrained dimensions the
sampler refuses (use ``pm.sample``): independence proposals degrade quickly with
dimension.

References
----------
.. [1] Tierney, L. (1994). Markov chains for exploring posterior distributions. *Ann.
   Statist.* 22, 1701-1728.
.. [2] Mengersen, K. L. and Tweedie, R. L. (1996). Rates of convergence of the Hastings
   and Metropolis algorithms. *Ann. Statist.* 24, 101-121.
.. [3] Hesterberg, T. (1995). Weighted average importance sampling and defensive mixture
   distributions. *Technometrics* 37, 185-194.
.. [4] Cappé, O., Guillin, A., Marin, J.-M. and Robert, C. P. (2004). Population Monte
   Carlo. *J. Comput. Graph. Statist.* 13, 907-929.
.. [5] Cornuet, J.-M., Marin, J.-M., Mira, A. and Robert, C. P. (2012). Adaptive multiple
   importance sampling. *Scand. J. Statist.* 39, 798-812.
.. [6] Ionides, E. L. (2008). Truncated importance sampling. *J. Comput. Graph. Statist.*
   17, 295-311.
.. [7] Roberts, G. O., Gelman, A. and Gilks, W. R. (1997). Weak convergence and optimal
   scaling of random walk Metropolis algorithms. *Ann. Appl. Probab.* 7, 110-120.
"""

from __future__ import annotations

import time
import warnings

import arviz as az
import numpy as np
import pymc as pm
import pytensor
from pymc.pytensorf import join_nonshared_inputs
from scipy.optimize import minimize
from scipy.special import logsumexp

from pymc_sparse.inference._evaluate import evaluation_order, logps
from pymc_sparse.inference._idata import posterior_at_points
from pymc_sparse.inference._mixture import (
    _fit_mixture,
    _Proposal,
    _repair_cov,
    _weighted_moments,
)
from pymc_sparse.linalg.forkpool import ForkPool, default_workers

__all__ = ["sample_imh"]

#: Weight, covariance factor and degrees of freedom of the defensive wide component.  A
#: 4x wider sd than the fitted posterior's: variance parameters weakly identified from
#: below (a noise sd against a field's small-scale variance) have exponential tails in
#: log scale that a mixture fitted to a few hundred weighted draws underestimates.
_DEFENSIVE = (0.1, 16.0, 3.0)
#: Importance-sampling rounds that fit the proposal.
_ROUNDS = 2
#: Extra rounds while the last proposal's own importance efficiency (ESS / draws) is
#: below ``_POOR``: a poor fit on an unlucky seed is refitted instead of kept.
_EXTRA_ROUNDS, _POOR = 2, 0.1


def _efficiency(logw) -> float:
    """Return Kish's effective sample size over the number of draws, for log weights."""
    logw = np.asarray(logw, np.float64)
    if not np.any(np.isfinite(logw)):
        return 0.0
    w = np.exp(logw - np.max(logw[np.isfinite(logw)]))
    w = np.where(np.isfinite(w), w, 0.0)
    return float(w.sum() ** 2 / np.sum(w**2) / w.size)


class _Raveled:
    """The model's log-density and gradient on one flat vector of unconstrained values."""

    def __init__(self, model):
        self.model = model
        ip = model.initial_point()
        self.value_vars = list(model.value_vars)
        self.names = [v.name for v in self.value_vars]
        self.shapes = [np.shape(ip[nm]) for nm in self.names]
        self.sizes = [int(np.prod(s, dtype=int)) for s in self.shapes]
        self.x0 = np.concatenate([np.ravel(ip[nm]) for nm in self.names]).astype(np.float64)
        logp = model.logp()
        dlogp = pytensor.grad(logp, self.value_vars)
        (logp_j, *dlogp_j), x = join_nonshared_inputs(ip, [logp, *dlogp], self.value_vars)
        self._logp = pytensor.function([x], logp_j)
        grad = pytensor.tensor.concatenate([g.ravel() for g in dlogp_j])
        self._logp_dlogp = pytensor.function([x], [logp_j, grad])

    @property
    def dim(self) -> int:
        return int(self.x0.size)

    def logp(self, x) -> float:
        v = float(self._logp(np.asarray(x, np.float64)))
        return v if np.isfinite(v) else -np.inf

    def logp_dlogp(self, x):
        v, g = self._logp_dlogp(np.asarray(x, np.float64))
        return float(v), np.asarray(g, np.float64)

    def unravel(self, x) -> dict:
        out, i = {}, 0
        for nm, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[nm] = np.reshape(x[i : i + size], shape)
            i += size
        return out


def _laplace(f: _Raveled, start, h: float):
    """MAP and inverse negative Hessian (central differences of the exact gradient)."""

    def neg(x):
        v, g = f.logp_dlogp(x)
        if not np.isfinite(v):
            return 1e300, np.zeros_like(x)
        return -v, -g

    res = minimize(neg, start, jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    x = res.x
    k = x.size
    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = h * max(1.0, abs(x[j]))
        H[:, j] = (f.logp_dlogp(x + e)[1] - f.logp_dlogp(x - e)[1]) / (2 * e[j])
    H = 0.5 * (H + H.T)
    try:
        cov = np.linalg.inv(-H)
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        warnings.warn(
            "The Hessian at the MAP is not negative definite (a boundary or flat direction); "
            "the first proposal uses a unit covariance. Check the acceptance rate.",
            UserWarning,
            stacklevel=3,
        )
        cov = np.eye(k)
    return x, cov, int(res.nfev)


def _draw_and_evaluate(f, q, n, rng, progress, task, pool):
    """``n`` draws from ``q`` and their log posterior densities (on ``pool``'s workers)."""
    x = q.rvs(n, rng)
    # Each worker takes a stretch of one short path through the draws (warm starts).
    chunks = np.array_split(evaluation_order(x), pool.workers)
    parts = pool.map(logps, [x[c] for c in chunks])
    if parts is None:
        lp = logps(f, x)
    else:
        lp = np.empty(n)
        lp[np.concatenate(chunks)] = np.concatenate(parts)
    progress.advance(task, n)
    return x, lp


def _chain(f, args):
    """One chain (:func:`_run`) from ``(q, rw_chol, x, lp, n, rw_every, seed)``, in a worker."""
    *head, seed = args
    return _run(f, *head, np.random.default_rng(seed), None, None)


def _amis_weights(x, lp, proposals, counts):
    r"""Normalised deterministic-mixture weights of all draws so far.

    Draw :math:`x` gets :math:`\pi(x) / \sum_r (n_r/N) q_r(x)` over every proposal used
    (adaptive multiple importance sampling, Cornuet et al. 2012): a draw from an early,
    poor proposal is not given the huge weight its own proposal alone would give it.
    Weights are then truncated at :math:`\bar w \sqrt N` (Ionides 2008), which bounds the
    influence of any one draw on the fitted mixture.
    """
    frac = np.asarray(counts, np.float64) / np.sum(counts)
    logq = logsumexp(np.stack([np.log(fr) + q.logpdf(x) for fr, q in zip(frac, proposals)]), axis=0)
    lw = lp - logq
    if not np.any(np.isfinite(lw)):
        raise RuntimeError(
            "Every tuning draw has zero posterior density: the MAP search failed or the model "
            "has no support near it. Check the model (pm.Model.point_logps) or use pm.sample."
        )
    w = np.exp(lw - logsumexp(lw))
    w = np.minimum(w, np.sqrt(w.size) / w.size)
    return w / w.sum()


def _run(f, q, rw_chol, x, lp, n, rw_every, rng, progress, task):
    r"""``n`` iterations from ``x``: independence steps, some followed by a random-walk step.

    A random-walk step follows every ``rw_every``-th independence step.  Each step leaves
    the posterior invariant, so any fixed cycle of them does.  The independence step makes
    near-independent jumps where the proposal fits; the random-walk step moves the chain
    on where it does not (a point of large weight :math:`\pi/q`, which the independence
    step alone would hold for many iterations).
    """
    props = q.rvs(n, rng)
    lqs = q.logpdf(props)
    lq = float(q.logpdf(x)[0])
    steps = rng.standard_normal((n, x.size)) @ rw_chol.T
    us = np.log(rng.uniform(size=(n, 2)))
    xs = np.empty((n, x.size))
    lps = np.empty(n)
    acc = np.zeros((n, 2), dtype=bool)
    # The proposals do not depend on the state: evaluate them first, neighbours in turn.
    lp_props = logps(f, props)
    for t in range(n):
        lp_new = lp_props[t]
        # log w = log pi - log q; accept with probability min(1, w' / w)
        if us[t, 0] < (lp_new - lqs[t]) - (lp - lq):
            x, lp, lq = props[t], lp_new, lqs[t]
            acc[t, 0] = True
        if t % rw_every == rw_every - 1:
            y = x + steps[t]
            lp_y = f.logp(y)
            if us[t, 1] < lp_y - lp:
                x, lp = y, lp_y
                lq = float(q.logpdf(x)[0])
                acc[t, 1] = True
        xs[t], lps[t] = x, lp
        if progress is not None:
            progress.advance(task)
    return xs, lps, acc


def sample_imh(
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    *,
    model=None,
    df: float = 5.0,
    components: int = 3,
    inflate: float = 1.5,
    random_seed=None,
    progressbar: bool = True,
    max_dim: int = 20,
    fd_step: float = 1e-4,
    correction: str | None = None,
    cores: int | None = None,
    rw_every: int = 4,
) -> az.InferenceData:
    r"""Sample a low-dimensional posterior by independence Metropolis-Hastings.

    Each iteration is one independence step from a proposal fitted by adaptive importance
    sampling and one random-walk step; both are exact (see the module docstring).  Meant
    for the hyperparameters of a model whose latent field is integrated out
    (:class:`~pymc_sparse.MarginalGMRFNormal`).
    Every free variable of the model is sampled; the result has the layout of
    ``pm.sample``'s (constrained values and deterministics in ``posterior``), so
    :func:`pymc_sparse.sample_latent` and ArviZ work on it unchanged.

    Parameters
    ----------
    draws, tune, chains : int
        Kept draws per chain; log-density evaluations spent fitting the proposal (two
        importance-sampling rounds of ``tune // 2``, up to four if the fit is poor,
        shared by the chains, discarded); number of independent chains.
    model : pm.Model, optional
        Default: the model on the context stack.
    df : float
        Degrees of freedom of the t components (heavier tails than the posterior keep
        the importance weights bounded).
    components : int
        Gaussian components of the fitted mixture (fewer survive if EM empties them).
    inflate : float
        Scale factor of the Laplace covariance for the first importance round.
    random_seed : int or numpy Generator, optional
    progressbar : bool
    max_dim : int
        Largest number of unconstrained dimensions accepted.
    fd_step : float
        Relative step of the finite-difference Hessian.
    correction : {None, "second_order"}
        For a model with a :class:`~pymc_sparse.LaplaceGMRF` likelihood: target the
        Laplace marginal plus its second-order correction :math:`\varepsilon(\theta)`
        (:func:`~pymc_sparse.fit_laplace_grid`, :mod:`pymc_sparse.linalg.laplace.correction`).
        The sampler needs log densities only (no gradient of :math:`\varepsilon`), so the
        draws are exact for the corrected target, with no importance weights to lose ESS
        to; each evaluation costs one more selected inverse and solve of the cached
        factor.  The proposal is fitted around the uncorrected MAP (close enough for an
        independence proposal with t tails).
    cores : int, optional
        Processes evaluating the log density: the tuning draws are split between them and
        the chains run side by side (forked workers; CHOLMOD holds the GIL, so threads
        would not).  Default: ``min(chains, available cores)``; 1 runs everything here.
        The draws are the same for every ``cores`` (one random generator per chain).
    rw_every : int
        A random-walk step after every ``rw_every``-th independence step (1: after each).
        Where the proposal fits, the random-walk steps add little: on the NYC BYM2
        Laplace marginal, 4 instead of 1 cut the evaluations per draw from 2 to 1.25 and
        the ESS per draw by about 7 % (``docs/laplace.md``).

    Returns
    -------
    arviz.InferenceData
        ``posterior`` (``chains x draws``), ``sample_stats`` with ``lp``, ``accepted``
        (independence step), ``accepted_rw`` (random-walk step; False where none was
        taken) and attributes
        ``acceptance_rate``, ``acceptance_rate_rw``, ``sampling_time`` (seconds:
        compilation, MAP, tuning and draws) and ``n_logp_evals``.

    Raises
    ------
    ValueError
        If the model has more than ``max_dim`` unconstrained dimensions or no free
        variables.

    Warns
    -----
    UserWarning
        If the acceptance rate of the kept draws is below 10 %: the proposal fits the
        posterior poorly (the draws are still exact but autocorrelated); use
        ``pm.sample`` (NUTS).

    Examples
    --------
    >>> import pymc as pm
    >>> with pm.Model():
    ...     mu = pm.Normal("mu", 0, 10)
    ...     y = pm.Normal("y", mu, 1, observed=[0.1, -0.3, 0.4])
    ...     idata = sample_imh(200, 100, chains=2, random_seed=1, progressbar=False)
    >>> idata.posterior["mu"].shape
    (2, 200)
    """
    model = pm.modelcontext(model)
    if draws < 1 or tune < 20 or chains < 1 or int(rw_every) < 1:
        raise ValueError(
            f"Need draws >= 1, tune >= 20, chains >= 1, rw_every >= 1; got {draws}, {tune}, "
            f"{chains}, {rw_every}."
        )
    rw_every = int(rw_every)
    t0 = time.perf_counter()
    if not model.value_vars:
        raise ValueError("The model has no free variables to sample.")
    f = _Raveled(model)
    if correction is not None:
        if correction != "second_order":
            raise ValueError(f"correction must be None or 'second_order', got {correction!r}.")
        # Imported here: laplace_grid builds on this module (_Raveled).
        from pymc_sparse.inference.laplace_grid import _CorrectionAt

        f.logp = _CorrectionAt(model, f).corrected(f.logp)
    k = f.dim
    if k > max_dim:
        raise ValueError(
            f"The model has {k} unconstrained dimensions; independence proposals degrade "
            f"quickly with dimension (max_dim={max_dim}). Integrate the latent field out "
            "(MarginalGMRFNormal) or use pm.sample."
        )
    if tune < 100 * k:
        warnings.warn(
            f"tune={tune} importance draws to fit a proposal in {k} dimensions is few; the "
            f"chains stay exact but may mix poorly. Use tune >= {100 * k} (default 1000).",
            UserWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(random_seed)
    mode, cov, nfev = _laplace(f, f.x0, fd_step)
    # Once here, before the workers fork: whatever f.logp compiles lazily (the correction's
    # input function) is then inherited instead of compiled again in every worker.
    f.logp(mode)
    n_evals = nfev + 2 * k
    q = _Proposal([1.0], [mode], [inflate**2 * cov], [df])

    from rich.progress import Progress

    progress = Progress(disable=not progressbar)
    per_round = max(tune // _ROUNDS, 2)
    cores = min(chains, default_workers()) if cores is None else int(cores)
    with progress, ForkPool(cores, f, "evaluation of the log density") as pool:
        task = progress.add_task("IMH", total=_ROUNDS * per_round + chains * draws)
        proposals, counts, xs, lps = [], [], np.empty((0, k)), np.empty(0)
        rounds, r = _ROUNDS, 0
        while r < rounds:
            r += 1
            x_new, lp_new = _draw_and_evaluate(f, q, per_round, rng, progress, task, pool)
            n_evals += per_round
            proposals.append(q)
            counts.append(per_round)
            xs, lps = np.concatenate([xs, x_new]), np.concatenate([lps, lp_new])
            w = _amis_weights(xs, lps, proposals, counts)
            # A poor last proposal (few effective draws of its own) gets another round.
            if r == rounds and rounds < _ROUNDS + _EXTRA_ROUNDS:
                if _efficiency(lp_new - q.logpdf(x_new)) < _POOR:
                    rounds += 1
                    progress.update(task, total=rounds * per_round + chains * draws)
            if 1.0 / np.sum(w**2) < 2 * k + 2:  # too few effective draws to fit: widen
                q = _Proposal([1.0], [mode], [4 * inflate**2 * cov], [df])
                continue
            q = _fit_mixture(xs, w, components, df)
        m, S = _weighted_moments(xs, w)
        S = _repair_cov(S, max(float(np.trace(S)) / k, np.finfo(np.float64).tiny))
        if S is None:  # pragma: no cover - weights are finite by construction
            S = cov
        q = q.defensive(m, S, *_DEFENSIVE)
        # Random-walk scale 2.38 / sqrt(k) times the posterior's (Roberts et al. 1997).
        rw_chol = np.linalg.cholesky(2.38**2 / k * S)
        # Start each chain from the weighted sample (sampling-importance-resampling).
        starts = rng.choice(xs.shape[0], size=chains, p=w)
        out_x = np.empty((chains, draws, k))
        out_lp = np.empty((chains, draws))
        out_acc = np.empty((chains, draws, 2), dtype=bool)
        # One generator per chain: the same draws whether the chains run here or in workers.
        seeds = rng.integers(2**63, size=chains)
        tasks = [
            (q, rw_chol, xs[i], lps[i], draws, rw_every, sd)
            for i, sd in zip(starts, seeds, strict=True)
        ]
        runs = pool.map(_chain, tasks)
        if runs is None:
            runs = [_run(f, *t[:6], np.random.default_rng(t[6]), progress, task) for t in tasks]
        else:
            progress.advance(task, chains * draws)
        for c, run in enumerate(runs):
            out_x[c], out_lp[c], out_acc[c] = run
    n_evals += chains * (draws + draws // rw_every) + 1
    rate = float(out_acc[..., 0].mean())
    if rate < 0.1:
        warnings.warn(
            f"Independence sampler acceptance rate {rate:.3f}: the proposal fits the posterior "
            "poorly, so the draws are strongly autocorrelated (still exact). Use pm.sample.",
            UserWarning,
            stacklevel=2,
        )
    elapsed = time.perf_counter() - t0
    rate_rw = float(out_acc[:, rw_every - 1 :: rw_every, 1].mean()) if draws >= rw_every else 0.0
    stats = (rate, rate_rw, elapsed, n_evals)
    return _to_inference_data(model, f, out_x, out_lp, out_acc, stats)


def _to_inference_data(model, f, xs, lps, acc, stats):
    """``pm.sample``-like InferenceData: constrained free variables and deterministics."""
    idata = posterior_at_points(
        model,
        f,
        xs,
        sample_stats={"lp": lps, "accepted": acc[..., 0], "accepted_rw": acc[..., 1]},
    )
    rate, rate_rw, elapsed, n_evals = stats
    idata.sample_stats.attrs.update(
        {
            "sampler": "independence Metropolis-Hastings (pymc_sparse.sample_imh)",
            "acceptance_rate": rate,
            "acceptance_rate_rw": rate_rw,
            "sampling_time": elapsed,
            "n_logp_evals": int(n_evals),
        }
    )
    return idata
