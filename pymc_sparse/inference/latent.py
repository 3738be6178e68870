r"""Recover the latent GMRF after fitting a model in which it was integrated out.

For a :class:`~pymc_sparse.distributions.marginal.MarginalGMRFNormal` likelihood
(:math:`x \sim N(\mu, Q^{-1})`, :math:`y = Ax + e`, :math:`e \sim N(0,
\operatorname{diag}(\sigma^2))`), the latent field given the hyperparameters is Gaussian
with a sparse precision:

.. math::

    x \mid \theta, y \sim N\!\left(Q_{\mathrm{post}}^{-1}(Q\mu + A^\top D y),\
    Q_{\mathrm{post}}^{-1}\right), \qquad
    Q_{\mathrm{post}} = Q + A^\top D A, \quad D = \operatorname{diag}(\sigma^{-2}).

For every retained posterior draw of :math:`\theta` this module factorises
:math:`Q_{\mathrm{post}} = P^\top L L^\top P` once (through the shared cache), takes the
mean by one solve, an exact draw as :math:`\text{mean} + P^\top L^{-\top} z` with
:math:`z \sim N(0, I)` (Rue 2001), and optionally the conditional marginal variances
:math:`\operatorname{diag}(Q_{\mathrm{post}}^{-1})` from the selected inverse.  Averaging
over the draws of :math:`\theta` gives Rao-Blackwellised posterior means and, by the
law of total variance, posterior standard deviations:

.. math::

    E[x \mid y] = E_\theta[m_\theta], \qquad
    \operatorname{Var}[x_i \mid y] = E_\theta[v_{\theta,i}]
        + \operatorname{Var}_\theta[m_{\theta,i}].

References
----------
.. [1] Rue, H. (2001). Fast sampling of Gaussian Markov random fields. J. R. Stat. Soc. B
   63, 325-338.
.. [2] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*. Chapman & Hall/CRC,
   2.3 and 3.1.
"""

from __future__ import annotations

import numpy as np
import pytensor
import xarray as xr
from pytensor.graph.basic import Constant

from pymc_sparse.distributions.marginal import MarginalGMRFNormalRV
from pymc_sparse.inference.conditional import conditional_latent_numeric
from pymc_sparse.inference.latent_laplace import is_laplace_rv, sample_latent_laplace

__all__ = ["sample_latent"]


def _is_marginal(rv) -> bool:
    return (rv.owner is not None and isinstance(rv.owner.op, MarginalGMRFNormalRV)) or (
        is_laplace_rv(rv)
    )


def _find_marginal_rv(model, var_name):
    if var_name is None:
        found = [rv for rv in model.observed_RVs if _is_marginal(rv)]
        if len(found) != 1:
            raise ValueError(
                f"The model has {len(found)} MarginalGMRFNormal or LaplaceGMRF observed "
                "variables; pass `var_name` to choose one."
            )
        return found[0]
    rv = model[var_name]
    if not _is_marginal(rv):
        raise TypeError(
            f"{var_name!r} is not a MarginalGMRFNormal or LaplaceGMRF variable; sample_latent "
            "recovers the latent field integrated out by such a likelihood."
        )
    if rv not in model.observed_RVs:
        raise ValueError(f"{var_name!r} must be observed (the latent posterior conditions on y).")
    return rv


def _observed_value(model, rv) -> np.ndarray:
    val = model.rvs_to_values[rv]
    if isinstance(val, Constant):
        return np.asarray(val.data, dtype=np.float64)
    return np.asarray(val.eval(), dtype=np.float64)


def _progress(total: int, description: str, enabled: bool):
    """Start a rich progress bar (rich is a pymc dependency), or return None."""
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    prog = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        "{task.completed}/{task.total}",
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    prog.start()
    task = prog.add_task(description, total=total)
    return prog, task


def sample_latent(
    idata,
    model,
    var_name: str | None = None,
    *,
    name: str = "x",
    node_dim: str | None = None,
    thin: int = 1,
    marginal_sd: bool = True,
    store_conditional: bool = False,
    seed=None,
    progressbar: bool = True,
    importance: bool = False,
    n_importance: int = 100,
) -> xr.Dataset:
    r"""Draw the integrated-out latent field for every (thinned) posterior draw.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.Dataset
        The fit; its ``posterior`` must hold every free variable of ``model``.
    model : pymc.Model
        The model containing the :class:`MarginalGMRFNormal` likelihood.
    var_name : str, optional
        Name of that observed variable (found automatically if there is only one).
    name : str, default "x"
        Name of the latent variable in the result.
    node_dim : str, optional
        Name of the node dimension (default ``f"{name}_dim_0"``).
    thin : int, default 1
        Use every ``thin``-th draw of each chain.
    marginal_sd : bool, default True
        Compute the conditional marginal variances by the selected inverse (exact, one
        Takahashi pass per draw) for the Rao-Blackwellised posterior sd.  If False, the
        sd is estimated from the latent draws.
    store_conditional : bool, default False
        Also return the per-draw conditional means (and sds) — ``chain x draw x n`` arrays.
    seed : int or numpy.random.Generator, optional
    progressbar : bool, default True
    importance : bool, default False
        LaplaceGMRF only: correct the Gaussian approximation of :math:`x \mid \theta, y` by
        importance sampling with ``n_importance`` proposals per draw, and report the
        relative effective sample size (see :mod:`.latent_laplace`).
    n_importance : int, default 100

    Returns
    -------
    xarray.Dataset
        ``{name}`` (chain, draw, node): exact posterior draws of the latent field;
        ``{name}_mean`` (node): Rao-Blackwellised posterior mean;
        ``{name}_sd`` (node): posterior sd; with ``store_conditional``,
        ``{name}_cond_mean`` and ``{name}_cond_sd`` (chain, draw, node).
        Add it to the fit with ``idata.add_groups(latent_posterior=ds)``.

    Notes
    -----
    For a :class:`~pymc_sparse.distributions.laplace.LaplaceGMRF` likelihood the draws
    are from the Laplace approximation :math:`N(x^*, H^{-1})` at every draw of
    :math:`\theta`; after :func:`~pymc_sparse.marginalize_laplace` they come back under the
    names of the integrated-out variables (``{var}``, ``{var}_mean``, ``{var}_sd``, e.g.
    ``b_u`` and ``b_v`` of a BYM2), with the Deterministics that depended on them (``b``,
    relative risks) recomputed per draw; ``importance=True`` adds ``{var}_is_mean``,
    ``laplace_is_ess`` and ``laplace_log_ratio`` (chain, draw).

    Draws whose hyperparameters make :math:`Q_{\mathrm{post}}` not positive definite
    (impossible for a valid posterior draw) come back NaN.
    """
    rv = _find_marginal_rv(model, var_name)
    if is_laplace_rv(rv):
        return _laplace_path(
            idata, model, rv, name, node_dim, thin, seed, progressbar, importance, n_importance
        )
    op = rv.owner.op
    pattern, design = op.pattern, op.design
    data_v, mu_v, sigma_v = rv.owner.inputs[2:5]
    y = _observed_value(model, rv)
    thin = int(thin)
    if thin < 1:
        raise ValueError(f"`thin` must be a positive integer, got {thin}.")

    posterior = idata.posterior if hasattr(idata, "posterior") else idata
    inputs = [v for v in model.free_RVs]
    missing = [v.name for v in inputs if v.name not in posterior]
    if missing:
        raise ValueError(
            f"The posterior lacks {missing}; pass the InferenceData returned by pm.sample for "
            "this model."
        )
    fn = pytensor.function(
        inputs, [data_v, mu_v, sigma_v], on_unused_input="ignore", mode="FAST_RUN"
    )
    chains = posterior.sizes["chain"]
    draw_idx = np.arange(0, posterior.sizes["draw"], thin)
    nd = draw_idx.size
    n = pattern.n
    rng = np.random.default_rng(seed)
    values = {v.name: posterior[v.name].values for v in inputs}

    samples = np.empty((chains, nd, n))
    cond_mean = np.empty((chains, nd, n)) if store_conditional else None
    cond_var = np.empty((chains, nd, n)) if (store_conditional and marginal_sd) else None
    sum_m = np.zeros(n)
    sum_m2 = np.zeros(n)
    sum_v = np.zeros(n)
    bar = _progress(chains * nd, f"latent field ({n} nodes)", progressbar)
    try:
        for c in range(chains):
            for t, d in enumerate(draw_idx):
                data, mu, sigma = fn(*(values[v.name][c, d] for v in inputs))
                mean, f = conditional_latent_numeric(pattern, data, mu, design, sigma, y)
                samples[c, t] = mean + f.solve_Lt_perm(rng.standard_normal(n))
                sum_m += mean
                sum_m2 += mean * mean
                if marginal_sd:
                    var = f.marginal_variances()
                    sum_v += var
                    if cond_var is not None:
                        cond_var[c, t] = var
                if cond_mean is not None:
                    cond_mean[c, t] = mean
                if bar is not None:
                    bar[0].advance(bar[1])
    finally:
        if bar is not None:
            bar[0].stop()

    total = chains * nd
    post_mean = sum_m / total
    if marginal_sd:
        var_of_means = np.maximum(sum_m2 / total - post_mean**2, 0.0)
        post_sd = np.sqrt(sum_v / total + var_of_means)
    else:
        post_sd = samples.reshape(total, n).std(axis=0, ddof=1) if total > 1 else np.full(n, np.nan)

    node_dim = node_dim or f"{name}_dim_0"
    coords = {
        "chain": posterior["chain"].values,
        "draw": posterior["draw"].values[draw_idx],
        node_dim: np.arange(n),
    }
    dims3 = ("chain", "draw", node_dim)
    ds = xr.Dataset(
        {
            name: (dims3, samples),
            f"{name}_mean": ((node_dim,), post_mean),
            f"{name}_sd": ((node_dim,), post_sd),
        },
        coords=coords,
    )
    if cond_mean is not None:
        ds[f"{name}_cond_mean"] = (dims3, cond_mean)
    if cond_var is not None:
        ds[f"{name}_cond_sd"] = (dims3, np.sqrt(cond_var))
    ds.attrs["thin"] = thin
    ds.attrs["source_variable"] = rv.name
    return ds


def _laplace_path(idata, model, rv, name, node_dim, thin, seed, progressbar, importance, n_imp):
    thin = int(thin)
    if thin < 1:
        raise ValueError(f"`thin` must be a positive integer, got {thin}.")
    posterior = idata.posterior if hasattr(idata, "posterior") else idata
    total = posterior.sizes["chain"] * len(range(0, posterior.sizes["draw"], thin))
    bar = _progress(total, f"Laplace latent field ({rv.owner.op.structure.n} nodes)", progressbar)
    try:
        return sample_latent_laplace(
            idata,
            model,
            rv,
            _observed_value(model, rv),
            name=name,
            node_dim=node_dim,
            thin=thin,
            importance=importance,
            n_importance=n_imp,
            seed=seed,
            progress=bar,
        )
    finally:
        if bar is not None:
            bar[0].stop()
