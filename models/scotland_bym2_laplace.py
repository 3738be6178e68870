r"""Scottish lip cancer BYM2 with the spatial field integrated out (sparse Laplace).

The model of :mod:`models.scotland_bym2` as written there (``b = BYM2(W, sigma, rho)``,
``y ~ Poisson(E exp(beta0 + beta1 x + b))``), transformed by
:func:`pymc_sparse.marginalize_laplace`: the ICAR ``b_u`` and the iid ``b_v`` (112 latent
values) are integrated out by a Laplace approximation with an exact per-component
sum-to-zero constraint, and NUTS samples the four hyperparameters
``(beta0, beta1, sigma, rho)`` only.  The field, ``b`` and the relative risks ``rr`` are
recovered afterwards by :func:`pymc_sparse.sample_latent`.

Run from the repository root::

    python -m models.scotland_bym2_laplace                 # 4 chains x (1000 + 1000)
    python -m models.scotland_bym2_laplace --draws 300 --tune 300 --chains 2

It prints the summary, the comparison with the published Stan fit (field sampled) and
the importance-sampling check of the Gaussian approximation of the field.
"""

from __future__ import annotations

import argparse

import pymc as pm

from models.scotland_bym2 import (
    MAIN_VARS,
    PUBLISHED_STAN,
    add_sampling_args,
    compare_with_published,
    load_data,
    sample,
)
from models.scotland_bym2 import build_model as build_sampled_model
from pymc_sparse.inference.latent import sample_latent
from pymc_sparse.inference.marginalize import marginalize_laplace

__all__ = ["MAIN_VARS", "build_model", "load_data"]


def build_model(data: dict) -> pm.Model:
    """:func:`models.scotland_bym2.build_model` with ``b`` integrated out (Laplace)."""
    return marginalize_laplace(build_sampled_model(data), ["b"])


def main(argv=None):
    """Sample the hyperparameters, recover the field, compare with the published fit."""
    import arviz as az

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    args = p.parse_args(argv)
    data = load_data()
    model = build_model(data)
    idata, wall = sample(model, args)
    print(az.summary(idata, var_names=MAIN_VARS))
    print(f"sampling wall time: {wall:.1f} s (sampler {args.sampler})")
    for k, d in compare_with_published(idata).items():
        m, _ = PUBLISHED_STAN[k]
        print(f"  {k:6s} ours {float(idata.posterior[k].mean()):+.3f}, Stan {m:+.3f}: {d:.2f} sd")
    latent = sample_latent(idata, model, thin=10, importance=True, seed=args.seed)
    print(
        f"field: relative IS effective sample size min {latent.attrs['is_ess_min']:.2f}, "
        f"median {latent.attrs['is_ess_median']:.2f} (1 = Gaussian approximation exact)"
    )
    return idata, latent


if __name__ == "__main__":
    main()
