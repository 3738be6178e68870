r"""Latent recovery after a Laplace marginal: :math:`x \mid \theta, y \approx N(x^*, H^{-1})`.

For a :class:`~pymc_sparse.distributions.laplace.LaplaceGMRF` likelihood the field given
the hyperparameters is approximated by the Gaussian at the mode :math:`x^*(\theta)` with
precision :math:`H = Q + A^\top W A` (conditioned on :math:`Cx = 0` by kriging).  For
every retained draw of :math:`\theta` one Newton solve gives :math:`x^*`, the cached
factor of :math:`H` a draw :math:`x^* + P^\top L^{-\top} z` (Rue 2001) and the selected
inverse the marginal variances; the posterior mean and sd of :math:`x` follow by the law
of total variance, as for the Gaussian case (:mod:`.latent`).

Optional importance sampling (``importance=True``) measures and corrects the Gaussian
approximation: for each :math:`\theta`, :math:`S` draws :math:`x_s \sim q = N(x^*,
H^{-1})` get weights :math:`w_s \propto p(y \mid x_s)\, p(x_s \mid \theta) / q(x_s)`; the
returned draw is one of them resampled by weight (sampling-importance-resampling), and
the relative effective sample size :math:`(\sum w_s)^2 / (S \sum w_s^2)` is reported per
draw.  Near 1 the Gaussian is good; small values (very small counts, strongly skewed
conditionals) flag a poor approximation.  The mean weight also estimates
:math:`p(y \mid \theta)`, and its log-ratio to the Laplace value is reported: if it varies
across :math:`\theta`, the hyperparameter posterior itself is biased.  The weights are
joint over all :math:`n` latent values and degenerate as :math:`n` grows (on the NYC BYM2
model, :math:`n = 3842`, the relative ESS is about :math:`1/S`): for large fields the
ESS is a warning, not a usable correction; compare with a field-sampled fit instead
(:func:`~pymc_sparse.inference.laplace_check.check_laplace`).

References
----------
.. [1] Rue, H. (2001). Fast sampling of Gaussian Markov random fields. *J. R. Stat. Soc.
   B* 63, 325-338.
.. [2] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. *J. R. Stat.
   Soc. B* 71, 319-392.
.. [3] Kong, A. (1992). A note on importance sampling using standardized weights.
   Technical report 348, University of Chicago (the effective sample size).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytensor
import xarray as xr
from scipy.special import logsumexp

from pymc_sparse.linalg.laplace import laplace_posterior
from pymc_sparse.linalg.laplace.structure import LaplaceStructure

__all__ = ["is_laplace_rv", "sample_latent_laplace"]


def is_laplace_rv(rv) -> bool:
    """Whether ``rv`` is a :class:`LaplaceGMRF` variable (its Op carries the structure)."""
    return rv.owner is not None and isinstance(
        getattr(rv.owner.op, "structure", None), LaplaceStructure
    )


def _posterior_at(s: LaplaceStructure, values, y):
    q, mu, offset, a, n_trials, phi = values
    params = {"offset": offset}
    if s.family.uses_trials:
        params["n_trials"] = n_trials
    if s.family.param:
        params[s.family.param] = phi
    if s.constraint_kind == "components":
        constraint = "components"
    else:
        constraint = None if s.C is None else s.C.toarray()
    A = s.A_csr(s.a_default)
    return laplace_posterior(s.q_pattern, q, mu, (A, a), s.family.name, y, params, constraint)


def _digest(values) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for v in values:
        h.update(np.ascontiguousarray(v, dtype=np.float64).view(np.uint8))
    return h.digest()


def _fields(model, n: int, name: str, node_dim: str | None):
    info = getattr(model, "_pms_laplace", None)
    if info is not None:
        return info.fields, info
    return ((name, 0, n, (node_dim or f"{name}_dim_0",)),), None


def sample_latent_laplace(
    idata,
    model,
    rv,
    y,
    *,
    name: str = "x",
    node_dim: str | None = None,
    thin: int = 1,
    importance: bool = False,
    n_importance: int = 100,
    seed=None,
    progress=None,
) -> xr.Dataset:
    """Implement :func:`~pymc_sparse.sample_latent` for a LaplaceGMRF (see the module docstring)."""
    s: LaplaceStructure = rv.owner.op.structure
    inputs = rv.owner.inputs[2:]
    posterior = idata.posterior if hasattr(idata, "posterior") else idata
    free = list(model.free_RVs)
    missing = [v.name for v in free if v.name not in posterior]
    if missing:
        raise ValueError(f"The posterior lacks {missing}; pass the fit of this model.")
    fn = pytensor.function(free, inputs, on_unused_input="ignore", mode="FAST_COMPILE")
    chains = posterior.sizes["chain"]
    draw_idx = np.arange(0, posterior.sizes["draw"], thin)
    nd = draw_idx.size
    n = s.n
    rng = np.random.default_rng(seed)
    vals = {v.name: posterior[v.name].values for v in free}

    # Group identical hyperparameters (a resampled grid repeats points): one Newton solve each.
    groups: dict[bytes, list] = {}
    per_draw = {}
    for c in range(chains):
        for t, d in enumerate(draw_idx):
            v = [np.asarray(x, np.float64) for x in fn(*(vals[f.name][c, d] for f in free))]
            key = _digest(v)
            groups.setdefault(key, []).append((c, t))
            per_draw.setdefault(key, v)

    samples = np.empty((chains, nd, n))
    modes_sum = np.zeros(n)
    modes_sq = np.zeros(n)
    var_sum = np.zeros(n)
    is_ess = np.full((chains, nd), np.nan) if importance else None
    log_ratio = np.full((chains, nd), np.nan) if importance else None
    is_mean_sum = np.zeros(n) if importance else None
    for key, members in groups.items():
        post = _posterior_at(s, per_draw[key], y)
        k = len(members)
        modes_sum += k * post.mode
        modes_sq += k * post.mode**2
        var_sum += k * post.marginal_variances
        if importance:
            for c, t in members:
                cand = post.sample(n_importance, rng)
                lw = post.log_weights(cand)
                lse = logsumexp(lw)
                w = np.exp(lw - lse)
                is_ess[c, t] = 1.0 / (n_importance * np.sum(w**2))
                log_ratio[c, t] = lse - np.log(n_importance) - post.log_marginal
                samples[c, t] = cand[rng.choice(n_importance, p=w)]
                is_mean_sum += w @ cand
        else:
            draws = post.sample(k, rng).reshape(k, n)
            for (c, t), x in zip(members, draws):
                samples[c, t] = x
        if progress is not None:
            progress[0].advance(progress[1], k)

    total = chains * nd
    mean = modes_sum / total
    sd = np.sqrt(var_sum / total + np.maximum(modes_sq / total - mean**2, 0.0))
    fields, info = _fields(model, n, name, node_dim)
    coords = {"chain": posterior["chain"].values, "draw": posterior["draw"].values[draw_idx]}
    ds = xr.Dataset(coords=coords)
    for fname, start, stop, dims in fields:
        sl = slice(start, stop)
        if dims is None:  # a scalar effect
            dims, sl = (), start
        else:
            dims = tuple(dims) if dims else (f"{fname}_dim_0",)
        ds[fname] = (("chain", "draw", *dims), samples[:, :, sl])
        ds[f"{fname}_mean"] = (dims, mean[sl])
        ds[f"{fname}_sd"] = (dims, sd[sl])
        if importance:
            ds[f"{fname}_is_mean"] = (dims, is_mean_sum[sl] / total)
    if info is not None and info.dropped:
        _add_dropped(ds, info, posterior, samples, fields, draw_idx)
    if importance:
        ds["laplace_is_ess"] = (("chain", "draw"), is_ess)
        ds["laplace_log_ratio"] = (("chain", "draw"), log_ratio)
        lr = log_ratio.ravel() - np.max(log_ratio)
        wt = np.exp(lr) / np.exp(lr).sum()
        ds.attrs.update(
            {
                "is_ess_min": float(np.min(is_ess)),
                "is_ess_median": float(np.median(is_ess)),
                "theta_weight_ess": float(1.0 / (total * np.sum(wt**2))),
                "n_importance": int(n_importance),
            }
        )
    # Label the node dimensions with the model's coordinates (e.g. area names).
    coords_src = dict(info.source.coords) if info is not None else {}
    coords_src.update(model.coords)
    for dim, size in ds.sizes.items():
        vals = coords_src.get(dim) if dim not in ("chain", "draw") else None
        if vals is not None and len(vals) == size:
            ds = ds.assign_coords({dim: np.asarray(vals)})
    ds.attrs["thin"] = int(thin)
    ds.attrs["source_variable"] = rv.name
    ds.attrs["approximation"] = "Laplace: N(x*, H^-1) per draw of theta"
    return ds


def _add_dropped(ds, info, posterior, samples, fields, draw_idx):
    """Recompute the Deterministics that depended on the field, from the original model."""
    src = info.source
    dets = [src[nm] for nm in info.dropped]
    fn = pytensor.function(src.free_RVs, dets, on_unused_input="ignore", mode="FAST_COMPILE")
    slices = {f[0]: (f[1], f[2]) for f in fields}
    chains, nd = samples.shape[:2]
    out = {nm: [] for nm in info.dropped}
    for c in range(chains):
        for t, d in enumerate(draw_idx):
            args = []
            for v in src.free_RVs:
                if v.name in slices:
                    a, b = slices[v.name]
                    args.append(samples[c, t, a:b].reshape(v.type.ndim * (b - a,)))
                else:
                    args.append(posterior[v.name].values[c, d])
            for nm, r in zip(info.dropped, fn(*args)):
                out[nm].append(np.asarray(r))
    for nm, vals in out.items():
        arr = np.stack(vals).reshape((chains, nd, *np.shape(vals[0])))
        dims = tuple(src.named_vars_to_dims.get(nm) or ())
        if len(dims) != arr.ndim - 2:
            dims = tuple(f"{nm}_dim_{i}" for i in range(arr.ndim - 2))
        ds[nm] = (("chain", "draw", *dims), arr)
