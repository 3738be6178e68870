r"""Check a Laplace marginal against the same model with the field sampled (tmbstan's idea).

A Laplace approximation of :math:`p(y \mid \theta)` is exact for Gaussian observations and
good when every conditional :math:`x_i \mid \theta, y` is close to Gaussian (many counts
per latent value), but poor for very small counts or strongly skewed conditionals.  The
check that TMB users run with ``tmbstan`` (Monnahan and Kristensen 2018) is to fit the
same model twice, once with the latent field sampled by NUTS (exact up to Monte Carlo
error) and once with it integrated out, and compare the posteriors.
:func:`check_laplace` does that and reports, for every hyperparameter and every latent
variable, the difference of posterior means in units of the field-sampled posterior sd,
the ratio of posterior sds, and the Monte Carlo noise expected in that difference,
:math:`\sqrt{1/\mathrm{ESS}_1 + 1/\mathrm{ESS}_2}` sd units.

References
----------
.. [1] Monnahan, C. C. and Kristensen, K. (2018). No-U-turn sampling for fast Bayesian
   inference in ADMB and TMB: introducing the adnuts and tmbstan R packages. *PLoS ONE*
   13(5), e0197954.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm

from pymc_sparse.inference.latent import sample_latent
from pymc_sparse.inference.marginalize import marginalize_laplace

__all__ = ["LaplaceCheck", "check_laplace", "compare_posteriors"]


@dataclass
class LaplaceCheck:
    """Result of :func:`check_laplace`.

    Attributes
    ----------
    hyper : pandas.DataFrame
        One row per hyperparameter (element): ``mean_sampled``, ``sd_sampled``,
        ``mean_laplace``, ``sd_laplace``, ``diff_sd`` (difference of means over
        ``sd_sampled``), ``sd_ratio`` (``sd_laplace / sd_sampled``), ``mc_noise_sd``.
    latent : pandas.DataFrame
        One row per latent variable: ``max_abs_diff_sd``, ``mean_abs_diff_sd``,
        ``sd_ratio_min``, ``sd_ratio_max``, ``mc_noise_sd`` (median over elements).
    idata_sampled, idata_laplace : arviz.InferenceData
    latent_draws : xarray.Dataset
        :func:`~pymc_sparse.sample_latent` of the Laplace fit.
    times : dict
        Wall seconds of each fit (from the start of sampling, compilation included).
    """

    hyper: pd.DataFrame
    latent: pd.DataFrame
    idata_sampled: object
    idata_laplace: object
    latent_draws: object
    times: dict

    def __repr__(self) -> str:
        with pd.option_context("display.width", 120, "display.precision", 3):
            return (
                "Laplace check (differences in units of the field-sampled posterior sd)\n"
                f"hyperparameters:\n{self.hyper}\nlatent:\n{self.latent}\n"
                f"times (s): {self.times}"
            )


def _flat(da):
    """(chain, draw, ...) -> (samples, k) and element labels."""
    vals = da.values.reshape(da.sizes["chain"] * da.sizes["draw"], -1)
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    labels = [""] if not extra else [f"[{i}]" for i in range(vals.shape[1])]
    return vals, labels


def _ess(da) -> np.ndarray:
    return np.atleast_1d(az.ess(da.to_dataset(name="v"), method="bulk")["v"].values).ravel()


def compare_posteriors(sampled, laplace, names) -> pd.DataFrame:
    """Element-wise means and sds of ``names`` in two posteriors, in sampled-sd units."""
    rows = []
    for nm in names:
        a, labels = _flat(sampled[nm])
        b, _ = _flat(laplace[nm])
        ea, eb = _ess(sampled[nm]), _ess(laplace[nm])
        for j, lab in enumerate(labels):
            sa, sb = a[:, j].std(ddof=1), b[:, j].std(ddof=1)
            rows.append(
                {
                    "variable": nm + lab,
                    "mean_sampled": a[:, j].mean(),
                    "sd_sampled": sa,
                    "mean_laplace": b[:, j].mean(),
                    "sd_laplace": sb,
                    "diff_sd": (b[:, j].mean() - a[:, j].mean()) / sa if sa > 0 else np.nan,
                    "sd_ratio": sb / sa if sa > 0 else np.nan,
                    "mc_noise_sd": float(np.sqrt(1.0 / ea[j] + 1.0 / eb[j])),
                }
            )
    return pd.DataFrame(rows).set_index("variable")


def _latent_table(sampled, latent, names) -> pd.DataFrame:
    rows = []
    for nm in names:
        t = compare_posteriors(sampled, latent, [nm])
        rows.append(
            {
                "variable": nm,
                "max_abs_diff_sd": float(np.nanmax(np.abs(t["diff_sd"]))),
                "mean_abs_diff_sd": float(np.nanmean(np.abs(t["diff_sd"]))),
                "sd_ratio_min": float(np.nanmin(t["sd_ratio"])),
                "sd_ratio_max": float(np.nanmax(t["sd_ratio"])),
                "mc_noise_sd": float(np.median(t["mc_noise_sd"])),
            }
        )
    return pd.DataFrame(rows).set_index("variable")


def check_laplace(
    model: pm.Model,
    vars,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    method: str = "nuts",
    seed: int | None = None,
    sample_kwargs: dict | None = None,
    thin: int = 1,
    progressbar: bool = False,
) -> LaplaceCheck:
    r"""Fit ``model`` with the field sampled and with it integrated out; compare.

    Parameters
    ----------
    model : pm.Model
        The model as written (the field a free variable).
    vars : str or list of str
        The field(s) to integrate out (as for :func:`~pymc_sparse.marginalize_laplace`).
    draws, tune, chains : int
        NUTS settings of both fits (``draws`` also the number of grid draws).
    method : {"nuts", "grid"}
        How the marginal model is fitted: ``pm.sample`` or
        :func:`~pymc_sparse.fit_laplace_grid`.
    seed : int, optional
    sample_kwargs : dict, optional
        Extra arguments of both ``pm.sample`` calls (e.g. ``target_accept``).
    thin : int, default 1
        Recover the field at every ``thin``-th draw of the Laplace fit (one Newton solve
        and one selected inverse per retained draw).
    progressbar : bool

    Returns
    -------
    LaplaceCheck
        Tables ``hyper`` and ``latent`` and both fits.  Differences within about
        ``2 * mc_noise_sd`` are Monte Carlo noise; a Laplace approximation is usually
        considered adequate when hyperparameter means agree within 0.1-0.2 sd and the sd
        ratios lie within 0.9-1.1.

    Examples
    --------
    .. code-block:: python

        check = pms.check_laplace(model, ["b"], draws=1000, tune=1000, seed=1)
        print(check.hyper[["diff_sd", "sd_ratio", "mc_noise_sd"]])
    """
    from pymc_sparse.inference.laplace_grid import fit_laplace_grid

    if method not in ("nuts", "grid"):
        raise ValueError(f"`method` must be 'nuts' or 'grid', got {method!r}.")
    kw = dict(sample_kwargs or {})
    marginal = marginalize_laplace(model, vars)
    times = {}
    t0 = time.perf_counter()
    with model:
        full = pm.sample(
            draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar, **kw
        )
    times["sampled"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if method == "nuts":
        with marginal:
            lap = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                random_seed=seed,
                progressbar=progressbar,
                **kw,
            )
    else:
        lap = fit_laplace_grid(marginal, draws=draws * chains, seed=seed)
    times["laplace"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    latent = sample_latent(lap, marginal, thin=thin, seed=seed, progressbar=progressbar)
    times["latent"] = time.perf_counter() - t0
    hyper_names = [v.name for v in marginal.free_RVs]
    info = marginal._pms_laplace
    latent_names = [f[0] for f in info.fields] + list(info.dropped)
    hyper = compare_posteriors(full.posterior, lap.posterior, hyper_names)
    lat = _latent_table(full.posterior, latent, latent_names)
    return LaplaceCheck(hyper, lat, full, lap, latent, times)
