r"""Scottish lip cancer with the islands graph: BYM2 on a disconnected graph.

The same model as :mod:`models.scotland_bym2` (same data, priors and likelihood), but on
the Stan "islands" graph: the 6 edges that join Orkney (6), Shetland (8) and the Western
Isles (11) to the mainland are removed, which leaves 126 edges and 4 connected
components, the mainland (53 districts) and three single nodes.

What :func:`~pymc_sparse.distributions.bym2.BYM2` does with it, following R-INLA
(Freni-Sterrantino et al. 2018):

* the ICAR part ``b_u`` has a hard sum-to-zero constraint on the mainland only (53 - 1 =
  52 free coordinates) and the scaling factor of the mainland component;
* each island has no neighbours, so its ``u`` is iid N(0, 1) with scaling factor 1: its
  effect is ``b_i = sigma (sqrt(rho) u_i + sqrt(1 - rho) v_i) ~ N(0, sigma^2)``, no spatial
  smoothing but the same marginal variance as every other district.

``pm.ICAR`` instead imposes one soft constraint on the sum over all 56 districts, which
leaves the mean of the mainland component free to trade off against the islands.

Run from the repository root: ``python -m models.scotland_islands``.

References
----------
.. [1] Freni-Sterrantino, A., Ventrucci, M. and Rue, H. (2018). A note on intrinsic
   conditional autoregressive models for disconnected graphs. *Spatial and
   Spatio-temporal Epidemiology* 26, 25-34.
.. [2] Riebler, A., Sørbye, S. H., Simpson, D. and Rue, H. (2016). An intuitive Bayesian
   spatial model for disease mapping that accounts for scaling. *Statistical Methods in
   Medical Research* 25(4), 1145-1165.
"""

from __future__ import annotations

import argparse

import numpy as np
import pymc as pm

from models._data import load_scotland
from models.scotland_bym2 import (
    MAIN_VARS,
    add_sampling_args,
    build_bym2_poisson,
    plot_areal,
    sample,
)
from pymc_sparse.precision.components import GraphComponents
from pymc_sparse.precision.graph import validate_adjacency
from pymc_sparse.precision.scaling import scaling_factor


def load_data() -> dict:
    """The Scottish lip cancer data with the Stan islands graph (4 components)."""
    return load_scotland(graph="islands")


def build_model(data: dict) -> pm.Model:
    """Model 2: the BYM2 Poisson regression of model 1 on a disconnected graph."""
    return build_bym2_poisson(data, covariate=True)


def describe_graph(data: dict) -> dict:
    """Components, per-node scaling factors and free ICAR coordinates of the graph."""
    W = validate_adjacency(data["W"])
    comp = GraphComponents.from_adjacency(W)
    s = scaling_factor(W, per_node=True)
    return {
        "n_components": comp.n_components,
        "sizes": comp.sizes,
        "labels": comp.labels,
        "singletons": np.flatnonzero(comp.singleton),
        "scaling": s,
        # One constraint per component with >= 2 nodes; a singleton keeps its coordinate.
        "free_icar": comp.n - comp.proper_components.size,
    }


def main(argv=None):
    """Sample model 2, print the graph bookkeeping, the summary and the island effects."""
    import arviz as az

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    args = p.parse_args(argv)

    data = load_data()
    info = describe_graph(data)
    names = data["names"]
    print(
        f"islands graph: {data['W'].nnz // 2} edges, {info['n_components']} components of "
        f"sizes {sorted(info['sizes'].tolist(), reverse=True)}"
    )
    for i in info["singletons"]:
        print(f"  singleton {i + 1:2d} {names[i]:<14s} scaling factor {info['scaling'][i]:.4f}")
    main_comp = np.argmax(info["sizes"])
    k = np.flatnonzero(info["labels"] == main_comp)[0]
    print(
        f"  mainland ({info['sizes'][main_comp]} districts) scaling factor "
        f"{info['scaling'][k]:.4f}; ICAR free coordinates: {info['free_icar']} of {data['n']}"
    )

    model = build_model(data)
    idata, wall = sample(model, args)
    print(az.summary(idata, var_names=MAIN_VARS))
    isl = [names[i] for i in info["singletons"]]
    print(az.summary(idata, var_names=["b", "rr"], coords={"area": isl}))
    post = idata.posterior
    u = post["b_u"]
    mainland = [names[i] for i in np.flatnonzero(info["labels"] == main_comp)]
    worst = float(np.abs(u.sel(area=mainland).sum("area")).max())
    print(f"max |sum of b_u over the mainland| over all draws: {worst:.2e} (hard constraint)")
    print(
        f"sampling wall time: {wall:.1f} s ({args.chains} chains x "
        f"({args.tune} tune + {args.draws} draws), sampler {args.sampler})"
    )
    for path in plot_areal(idata, data, "scotland_islands"):
        print(f"saved {path}")
    return idata


if __name__ == "__main__":
    main()
