"""NYC BYM2: field integrated out (sparse Laplace) vs field sampled by NUTS.

Model: ``models/nyc_bym2.py`` (1,921 tracts, BYM2 Poisson with an intercept; 3,844
parameters when the field is sampled) and ``models/nyc_bym2_laplace.py`` (the same model
transformed by ``pms.marginalize_laplace``: NUTS on ``(beta0, sigma, rho)``).  Reported:
the minimum bulk ESS of ``(beta0, sigma, rho)`` per second of wall time **from model
build to posterior** (building, compilation, tuning and sampling; the data are loaded
before the clock starts), and the posterior means of both fits in units of the posterior
sd of a long field-sampled reference run.

Usage::

    python benchmarks/laplace_nyc.py side   [--draws 500 --tune 500 --chains 2] [--nuts-only]
                                            [--skip-marginal-nuts] [--seed 1]
    python benchmarks/laplace_nyc.py imh    [--draws 500 --tune 500 --chains 2]
    python benchmarks/laplace_nyc.py long   [--draws 2000 --tune 1000 --chains 2]
    python benchmarks/laplace_nyc.py report
    python benchmarks/laplace_nyc.py correction [--dense-check 3]

``side`` runs the Laplace fits (NUTS with a dense mass matrix on 3 parameters, the
INLA-style grid of ``pms.fit_laplace_grid`` and the independence sampler
``pms.sample_imh``) and the field-sampled fit one after the other with the same draws;
``long`` the field-sampled reference; ``report`` combines the JSON files in
``benchmarks/results/``; ``correction`` runs the grid with and without the second-order
correction of the Laplace log marginal (``fit_laplace_grid(correction="second_order")``)
and, with ``--dense-check k``, compares the sparse correction with a dense computation
(dense inverse of H, 3,842^2) at k grid points.  Cores are shared with other jobs on the
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
    if not args.skip_marginal_nuts:
        idata, wall = _nuts(build_laplace, data, args, init="jitter+adapt_full")
        rows.append(_row(idata, wall, "laplace_nuts", init="jitter+adapt_full"))
        print(rows[-1])
    if not args.nuts_only:
        rows += _grid_and_imh(data, args)
    if not args.skip_sampled:
        idata, wall = _nuts(build_sampled, data, args, target_accept=args.target_accept)
        rows.append(_row(idata, wall, "field_sampled_nuts", target_accept=args.target_accept))
        print(rows[-1])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"laplace_nyc_side_seed{args.seed}.json"
    if (args.nuts_only or args.skip_marginal_nuts) and path.exists():
        # keep the rows of an earlier run that this one did not repeat
        new = {r["label"] for r in rows}
        rows = [r for r in json.loads(path.read_text())["rows"] if r["label"] not in new] + rows
    path.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1, default=str))
    print(f"saved {path}")


def _grid_row(data, args, label, correction=None, note="") -> dict:
    """``fit_laplace_grid`` on the Laplace marginal, timed from the model build."""
    t0 = time.perf_counter()
    grid = fit_laplace_grid(
        build_laplace(data),
        draws=args.draws * args.chains,
        seed=args.seed,
        correction=correction,
    )
    row = _row(
        grid,
        time.perf_counter() - t0,
        label,
        n_evaluations=int(grid.posterior.attrs["n_evaluations"]),
        note=note,
    )
    print(row)
    return row


def _imh_row(data, args, label, correction=None, **extra) -> dict:
    """``sample_imh`` on the Laplace marginal, timed from the model build."""
    t0 = time.perf_counter()
    imh = sample_imh(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        model=build_laplace(data),
        random_seed=args.seed,
        progressbar=False,
        correction=correction,
    )
    row = _row(
        imh,
        time.perf_counter() - t0,
        label,
        acceptance_rate=float(imh.sample_stats.attrs["acceptance_rate"]),
        **extra,
    )
    print(row)
    return row


def _grid_and_imh(data, args) -> list:
    """The INLA-style grid and the independence sampler, without and with the correction."""
    return [
        _grid_row(
            data,
            args,
            "laplace_grid",
            note="ESS of a weighted resample of grid points (iid draws of a discrete "
            "approximation); compare its means, not its ESS, with NUTS",
        ),
        _imh_row(data, args, "laplace_imh"),
        _imh_row(data, args, "laplace_imh_corrected", correction="second_order"),
        _grid_row(
            data,
            args,
            "laplace_grid_corrected",
            correction="second_order",
            note="as laplace_grid, with the second-order correction",
        ),
    ]


def imh_only(args):
    """``sample_imh`` on the Laplace marginal alone, appended to the side-by-side results."""
    row = _imh_row(
        load_data(), args, "laplace_imh", note="run after the side-by-side run, not in it"
    )
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


def correction(args):
    """Grid with and without the second-order correction; means in long-run sds."""
    data = load_data()
    ref = json.loads((RESULTS / "laplace_nyc_long.json").read_text())["rows"][0]
    model = build_laplace(data)
    t0 = time.perf_counter()
    grid = fit_laplace_grid(
        model, draws=args.draws * args.chains, seed=args.seed, correction="second_order"
    )
    wall = time.perf_counter() - t0
    attrs = grid.posterior.attrs
    out = {"settings": vars(args), "wall_s": wall, "n_evaluations": int(attrs["n_evaluations"])}
    out["n_points"] = int(attrs["n_points"])
    out["correction_range"] = attrs["correction_range"]
    for label, key in (("uncorrected", "grid_mean_uncorrected"), ("second_order", "grid_mean")):
        means = json.loads(attrs[key])
        sds = json.loads(attrs[key.replace("mean", "sd")])
        out[label] = {
            "mean": {p: means[p] for p in PARAMS},
            "sd": {p: sds[p] for p in PARAMS},
            "mean_minus_ref_in_ref_sd": {
                p: (means[p] - ref["mean"][p]) / ref["sd"][p] for p in PARAMS
            },
        }
        print(label, out[label])
    if args.dense_check:
        out["dense_check"] = _dense_check(model, grid, args.dense_check)
    if args.imh:
        out["imh_reweighted"] = _imh_reweighted(data, args, ref)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "laplace_nyc_correction.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"saved {path}")


def _imh_reweighted(data, args, ref):
    """``sample_imh`` draws reweighted by exp(correction) (``reweight_laplace``)."""
    from pymc_sparse.inference.laplace_grid import reweight_laplace

    model = build_laplace(data)
    imh = sample_imh(
        draws=args.imh_draws,
        tune=args.imh_draws,
        chains=args.chains,
        model=model,
        random_seed=args.seed,
        progressbar=False,
    )
    t0 = time.perf_counter()
    rw = reweight_laplace(imh, model, var_names=PARAMS)
    row = {
        "draws": args.imh_draws * args.chains,
        "reweight_s": time.perf_counter() - t0,
        "ess": rw["ess"],
        "log_correction_range": [
            float(rw["log_correction"].min()),
            float(rw["log_correction"].max()),
        ],
    }
    for label in ("mean_uncorrected", "mean"):
        row[label] = rw[label]
        row[label + "_minus_ref_in_ref_sd"] = {
            p: (rw[label][p] - ref["mean"][p]) / ref["sd"][p] for p in PARAMS
        }
    print("imh reweighted", row)
    return row


def _dense_check(model, grid, k):
    """Sparse vs dense correction (dense H^-1, m x m S) at ``k`` resampled grid points."""
    import pytensor

    from pymc_sparse.inference.latent_laplace import is_laplace_rv
    from pymc_sparse.linalg.laplace.correction import (
        correction_dense,
        fourth_derivative,
        second_order_correction,
    )
    from pymc_sparse.linalg.laplace.posterior import laplace_posterior_from_inputs

    rv = next(r for r in model.observed_RVs if is_laplace_rv(r))
    op, y = rv.owner.op, np.asarray(data_y(model, rv), np.float64)
    fn = pytensor.function(model.free_RVs, rv.owner.inputs[2:], on_unused_input="ignore")
    s = op.structure
    post = grid.posterior
    rows = []
    for t in np.linspace(0, post.sizes["draw"] - 1, k).astype(int):
        point = [np.asarray(post[v.name][0, t].values, np.float64) for v in model.free_RVs]
        q, mu, off, a, ntr, phi = (np.asarray(v, np.float64) for v in fn(*point))
        lp = laplace_posterior_from_inputs(s, q, mu, off, a, y, ntr, phi, tol=op.tol)
        st = lp._state
        H = s.h_pattern.to_scipy(s.h_values(q, a, -st.d2)).toarray()
        sig = np.linalg.inv(H)
        C = s.C.toarray()
        U = sig @ C.T
        sig -= U @ np.linalg.solve(C @ U, U.T)
        A = s.A_csr(a)
        S = np.asarray(A @ (A @ sig).T)
        c4 = fourth_derivative(s.family, y, st.eta, ntr, phi)
        dense = correction_dense(st.d3, c4, S)
        sparse = second_order_correction(lp)
        rows.append(
            {
                "point": {nm: float(post[nm][0, t]) for nm in PARAMS},
                "dense": dense,
                "sparse": {
                    nm: getattr(sparse, nm)
                    for nm in ("value", "quartic", "cross", "cube", "cube_diagonal", "n_pairs")
                },
            }
        )
        print(rows[-1])
    return rows


def data_y(model, rv):
    """Observed values of ``rv``."""
    val = model.rvs_to_values[rv]
    return val.data if hasattr(val, "data") else val.eval()


def main(argv=None):
    """Parse the command line and run one part."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["side", "imh", "long", "report", "correction"])
    p.add_argument("--draws", type=int, default=None)
    p.add_argument("--tune", type=int, default=None)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--target-accept", type=float, default=0.9)
    p.add_argument("--skip-sampled", action="store_true")
    p.add_argument(
        "--nuts-only",
        action="store_true",
        help="side: NUTS on the Laplace marginal and field-sampled NUTS only (no grid/IMH)",
    )
    p.add_argument(
        "--skip-marginal-nuts",
        action="store_true",
        help="side: no NUTS on the Laplace marginal (keep that row of an earlier run)",
    )
    p.add_argument("--dense-check", type=int, default=0)
    p.add_argument("--imh", action="store_true", help="correction: also reweight IMH draws")
    p.add_argument("--imh-draws", type=int, default=500)
    args = p.parse_args(argv)
    defaults = {
        "side": (500, 500),
        "imh": (500, 500),
        "long": (2000, 1000),
        "report": (0, 0),
        "correction": (1000, 0),
    }
    defaults = defaults[args.part]
    args.draws = defaults[0] if args.draws is None else args.draws
    args.tune = defaults[1] if args.tune is None else args.tune
    np.random.seed(args.seed)
    parts = {"side": side, "imh": imh_only, "long": long, "report": report}
    parts["correction"] = correction
    parts[args.part](args)


if __name__ == "__main__":
    main()
