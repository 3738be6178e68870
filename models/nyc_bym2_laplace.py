r"""NYC pedestrian injuries BYM2 (1,921 tracts) with the field integrated out (Laplace).

The model of :mod:`models.nyc_bym2` (intercept, BYM2, exposure = population), transformed
by :func:`pymc_sparse.marginalize_laplace`: the 3,842 latent values ``b_u`` (ICAR, exact
sum-to-zero) and ``b_v`` are integrated out, and NUTS samples ``(beta0, sigma, rho)``
only; the field and the relative risks are recovered by :func:`pymc_sparse.sample_latent`.
``benchmarks/laplace_nyc.py`` compares it with the field sampled by NUTS.

Run from the repository root: ``python -m models.nyc_bym2_laplace`` (2 chains x
(500 tune + 500 draws) by default).
"""

from __future__ import annotations

import argparse

import pymc as pm

from models.nyc_bym2 import MAIN_VARS, load_data
from models.nyc_bym2 import build_model as build_sampled_model
from models.scotland_bym2 import add_sampling_args, sample
from pymc_sparse.inference.latent import sample_latent
from pymc_sparse.inference.marginalize import marginalize_laplace

__all__ = ["MAIN_VARS", "build_model", "load_data"]


def build_model(data: dict) -> pm.Model:
    """:func:`models.nyc_bym2.build_model` with ``b`` integrated out (Laplace)."""
    return marginalize_laplace(build_sampled_model(data), ["b"])


def main(argv=None):
    """Sample the hyperparameters and recover the field."""
    import arviz as az

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p, draws=500, tune=500, chains=2)
    args = p.parse_args(argv)
    data = load_data()
    model = build_model(data)
    idata, wall = sample(model, args)
    print(az.summary(idata, var_names=MAIN_VARS))
    print(f"sampling wall time: {wall:.1f} s (sampler {args.sampler})")
    latent = sample_latent(idata, model, thin=10, seed=args.seed)
    print(latent[["b_mean"]] if "b_mean" in latent else latent)
    return idata, latent


if __name__ == "__main__":
    main()
