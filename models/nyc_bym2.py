r"""NYC pedestrian and bicyclist injuries (2001): BYM2 on 1,921 census tracts.

The "bigger data" example of the Stan BYM2 case study (Morris et al. 2019): counts of
injuries per census tract with the tract population as exposure and no covariate::

    y_i   ~ Poisson(E_i exp(beta0 + b_i))     E_i = population, values < 10 set to 10
    b     = BYM2(W, sigma, rho)               queen contiguity, 5,461 edges, connected
    beta0 ~ Normal(0, 1)
    sigma ~ HalfNormal(1)
    rho   ~ Beta(0.5, 0.5)

The exposure floor ``E < 10 -> 10`` is the case study's (21 tracts have fewer than 10
inhabitants, 11 none); it is applied in :func:`models._data.load_nyc`, which keeps the raw
population in ``pop``.  ``exp(beta0 + b_i)`` is an injury rate per inhabitant, so
``beta0`` is about log(15490 / 7.07e6) = -6.1 plus the spatial adjustment; the Normal(0, 1)
prior on it is the case study's and is weak next to 15,490 events.

The sampler sees 1 + 2 + 1920 + 1921 = 3,844 parameters; one log-density gradient is a
sparse quadratic form over 5,461 edges (the ICAR's normalising constant is a fixed
number, computed once from a sparse factorisation).

Run from the repository root: ``python -m models.nyc_bym2`` (defaults: 2 chains x
(500 tune + 500 draws); pass ``--draws/--tune/--chains`` for longer runs).

References
----------
.. [1] Morris, M., Wheeler-Martin, K., Simpson, D., Mooney, S. J., Gelman, A. and
   DiMaggio, C. (2019). Bayesian hierarchical spatial models: implementing the Besag York
   Mollié model in Stan. *Spatial and Spatio-temporal Epidemiology* 31, 100301.
.. [2] DiMaggio, C. (2015). Small-area spatiotemporal analysis of pedestrian and
   bicyclist injuries in New York City. *Epidemiology* 26(2), 247-254.
"""

from __future__ import annotations

import argparse

import pymc as pm

from models._data import load_nyc
from models.scotland_bym2 import add_sampling_args, build_bym2_poisson, plot_areal, sample

MAIN_VARS = ["beta0", "sigma", "rho"]


def load_data() -> dict:
    """The NYC tract data of :func:`models._data.load_nyc`, with tract GEOIDs as area names."""
    data = load_nyc()
    data["names"] = [str(g) for g in data["geoid"]]
    return data


def build_model(data: dict, zero_sum_stdev: float | None = None) -> pm.Model:
    """Model 3: BYM2 Poisson with log-offset log E and an intercept only.

    ``zero_sum_stdev=0.001`` gives ``pm.ICAR``'s soft constraint, which nutpie samples in
    fewer steps (docs/performance/small_n.md); None (default) the exact one.
    """
    return build_bym2_poisson(data, covariate=False, zero_sum_stdev=zero_sum_stdev)


def main(argv=None):
    """Sample model 3, print the summary and save the plots."""
    import arviz as az

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p, draws=500, tune=500, chains=2)
    args = p.parse_args(argv)

    data = load_data()
    print(f"NYC: {data['n']} tracts, {data['W'].nnz // 2} edges, {int(data['y'].sum())} events")
    model = build_model(data)
    idata, wall = sample(model, args)
    print(az.summary(idata, var_names=MAIN_VARS))
    print(
        f"sampling wall time: {wall:.1f} s ({args.chains} chains x "
        f"({args.tune} tune + {args.draws} draws), sampler {args.sampler})"
    )
    for path in plot_areal(idata, data, "nyc_bym2", var_names=MAIN_VARS):
        print(f"saved {path}")
    return idata


if __name__ == "__main__":
    main()
