"""NYC BYM2: field integrated out (sparse Laplace) vs field sampled by NUTS.

Model: ``models/nyc_bym2.py`` (1,921 tracts, BYM2 Poisson with an intercept; 3,844
parameters when the field is sampled) and ``models/nyc_bym2_laplace.py`` (the same model
transformed by ``pms.marginalize_laplace``: NUTS on ``(beta0, sigma, rho)``).  Reported:
the minimum bulk ESS of ``(beta0, sigma, rho)`` per second of wall time **from model
build to posterior** (building, compilation, tuning and sampling; the data are loaded
before the clock starts), and the posterior means of both fits in units of the posterior
sd of a long field-sampled reference run.

Usage::

    python benchmarks/laplace_nyc.py side   [--draws 500 --tune 500 --chains 2]
    python benchmarks/laplace_nyc.py imh    [--draws 500 --tune 500 --chains 2]
    python benchmarks/laplace_nyc.py long   [--draws 2000 --tune 1000 --chains 2]
    python benchmarks/laplace_nyc.py report

``side`` runs the Laplace fits (NUTS with a dense mass matrix on 3 parameters, the
INLA-style grid of ``pms.fit_laplace_grid`` and the independence sampler
``pms.sample_imh``) and the field-sampled fit one after the other with the same draws;
``long`` the field-sampled reference; ``report`` combines the JSON files in
``benchmarks/results/``.  Cores are shared with other jobs on the
development machines: timings are noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import pymc as pm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.nyc_bym2 import build_model as build_sampled
from models.nyc_bym2 import load_data
from models.nyc_bym2_laplace import build_model as build_laplace
from pymc_sparse.inference.imh import sample_imh
from pymc_sparse.inference.laplace_grid import fit_laplace_grid

PARAMS = ["beta0", "sigma", "rho"]
RESULTS = Path(__file__).resolve().parent / "results"


def _row(idata, wall, label, **extra) -> dict:
    ess = az.ess(idata, var_names=PARAMS, method="bulk")
    rhat = az.rhat(idata, var_names=PARAMS)
    post = idata.posterior
    row = {
        "label": label,
        "wall_build_to_posterior_s": float(wall),
        "min_bulk_ess": float(min(ess[p].values for p in PARAMS)),
        "max_rhat": float(max(rhat[p].values for p in PARAMS)),
        "mean": {p: float(post[p].mean()) for p in PARAMS},
        "sd": {p: float(post[p].std()) for p in PARAMS},
        **extra,
    }
    row["ess_per_s"] = row["min_bulk_ess"] / row["wall_build_to_posterior_s"]
    return row


def _nuts(build, data, args, **kw):
    t0 = time.perf_counter()
    model = build(data)
    with model:
        idata = pm.sample(
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            cores=args.cores,
            random_seed=args.seed,
            progressbar=False,
            compute_convergence_checks=False,
            **kw,
        )
    return idata, time.perf_counter() - t0


def side(args):
    """Laplace (NUTS and grid) and field-sampled NUTS, one after the other."""
    data = load_data()
    rows = []
    idata, wall = _nuts(build_laplace, data, args, init="jitter+adapt_full")
    rows.append(_row(idata, wall, "laplace_nuts", init="jitter+adapt_full"))
    print(rows[-1])
    t0 = time.perf_counter()
    grid = fit_laplace_grid(build_laplace(data), draws=args.draws * args.chains, seed=args.seed)
    rows.append(
        _row(
            grid,
            time.perf_counter() - t0,
            "laplace_grid",
            n_evaluations=int(grid.posterior.attrs["n_evaluations"]),
            note="ESS of a weighted resample of grid points (iid draws of a discrete "
            "approximation); compare its means, not its ESS, with NUTS",
        )
    )
    print(rows[-1])
    t0 = time.perf_counter()
    imh = sample_imh(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        model=build_laplace(data),
        random_seed=args.seed,
        progressbar=False,
    )
    rows.append(
        _row(
            imh,
            time.perf_counter() - t0,
            "laplace_imh",
            acceptance_rate=float(imh.sample_stats.attrs["acceptance_rate"]),
        )
    )
    print(rows[-1])
    if not args.skip_sampled:
        idata, wall = _nuts(build_sampled, data, args, target_accept=args.target_accept)
        rows.append(_row(idata, wall, "field_sampled_nuts", target_accept=args.target_accept))
        print(rows[-1])
    out = {
        "settings": vars(args),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"laplace_nyc_side_seed{args.seed}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"saved {path}")


def imh_only(args):
    """``sample_imh`` on the Laplace marginal alone, appended to the side-by-side results."""
    data = load_data()
    t0 = time.perf_counter()
    imh = sample_imh(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        model=build_laplace(data),
        random_seed=args.seed,
        progressbar=False,
    )
    row = _row(
        imh,
        time.perf_counter() - t0,
        "laplace_imh",
        acceptance_rate=float(imh.sample_stats.attrs["acceptance_rate"]),
        note="run after the side-by-side run, not in it",
    )
    print(row)
    path = RESULTS / f"laplace_nyc_side_seed{args.seed}.json"
    out = json.loads(path.read_text())
    out["rows"] = [r for r in out["rows"] if r["label"] != "laplace_imh"] + [row]
    path.write_text(json.dumps(out, indent=1, default=str))


def long(args):
    """Long field-sampled reference run."""
    data = load_data()
    idata, wall = _nuts(build_sampled, data, args, target_accept=args.target_accept)
    row = _row(idata, wall, "field_sampled_long", target_accept=args.target_accept)
    print(row)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "laplace_nyc_long.json"
    path.write_text(json.dumps({"settings": vars(args), "rows": [row]}, indent=1, default=str))
    print(f"saved {path}")


def report(args):
    """Speed-up of ESS/s and mean differences in units of the long run's posterior sd."""
    side_rows = json.loads((RESULTS / f"laplace_nyc_side_seed{args.seed}.json").read_text())
    rows = {r["label"]: r for r in side_rows["rows"]}
    ref_path = RESULTS / "laplace_nyc_long.json"
    ref = json.loads(ref_path.read_text())["rows"][0] if ref_path.exists() else None
    base = rows.get("field_sampled_nuts")
    for label, r in rows.items():
        wall = r["wall_build_to_posterior_s"]
        line = (
            f"{label:20s} min bulk ESS {r['min_bulk_ess']:7.1f}  wall {wall:7.1f} s  "
            f"ESS/s {r['ess_per_s']:7.3f}"
        )
        if base is not None:
            line += f"  x{r['ess_per_s'] / base['ess_per_s']:.1f} vs field-sampled"
        print(line)
        if ref is not None:
            diffs = {p: (r["mean"][p] - ref["mean"][p]) / ref["sd"][p] for p in PARAMS}
            print(
                "    mean - long-run mean, in long-run sd: "
                + ", ".join(f"{p} {d:+.3f}" for p, d in diffs.items())
            )


def main(argv=None):
    """Parse the command line and run one part."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["side", "imh", "long", "report"])
    p.add_argument("--draws", type=int, default=None)
    p.add_argument("--tune", type=int, default=None)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--target-accept", type=float, default=0.9)
    p.add_argument("--skip-sampled", action="store_true")
    args = p.parse_args(argv)
    defaults = {"side": (500, 500), "imh": (500, 500), "long": (2000, 1000), "report": (0, 0)}
    defaults = defaults[args.part]
    args.draws = defaults[0] if args.draws is None else args.draws
    args.tune = defaults[1] if args.tune is None else args.tune
    np.random.seed(args.seed)
    {"side": side, "imh": imh_only, "long": long, "report": report}[args.part](args)


if __name__ == "__main__":
    main()
