r"""Proper CAR with unknown alpha and tau on a large 2-D lattice (the scale demonstration).

Data are simulated, with a fixed seed, from the model itself on an ``nx x nx`` rook
lattice (``nx = ceil(sqrt(n))``)::

    alpha ~ Uniform(0, 1)                     spatial dependence
    tau   ~ Gamma(2, 1)                       precision scale
    x     ~ CAR(0, W, alpha, tau)             N(0, [tau (D - alpha W)]^-1), n sites
    Poisson:  beta0 ~ Normal(0, 2),  y_i ~ Poisson(exp(beta0 + x_i))
    Gaussian: sigma ~ HalfNormal(1), y_i ~ Normal(x_i, sigma)

Every latent value is a parameter of the sampler (n + 2 or n + 3 of them).  ``pm.CAR``
cannot run this model at ``n = 10^5``: it stores ``W`` densely (80 GB) and takes the
eigenvalues of an ``n x n`` matrix; here a log-density gradient costs one sparse
Cholesky factorisation plus its selected inverse (``--logdet exact``, the
:class:`~pymc_sparse.distributions.car.CAR` distribution as written), or O(1) for the
log-determinant with the certified interpolation table of
:func:`pymc_sparse.distributions.car.car_logdet` built once (``--logdet interpolated``,
the default: the same
density to the table's certified tolerance; the quadratic form stays exact).

Run from the repository root::

    python -m models.lattice_car                        # n = 4,096, Poisson, tabulated logdet
    python -m models.lattice_car --n 100000 --draws 200 --tune 200 --chains 1

It prints the summary of ``alpha``, ``tau`` (and ``beta0``/``sigma``) against the values
used to simulate, the error of the posterior mean field, and saves
``models/output/lattice_car_n{n}_field.png`` (true field, data, posterior mean) and a
trace plot.  For the Gaussian likelihood with the field integrated out exactly see
:mod:`models.lattice_gaussian_marginal`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from pymc_sparse import sample_gmrf
from pymc_sparse.distributions.car import CAR, car_logdet, car_structure
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.precision.builders import car_precision, lattice_adjacency

OUTPUT = Path(__file__).resolve().parent / "output"
TRUTH = {"alpha": 0.95, "tau": 2.0, "beta0": 0.5, "sigma": 0.5}
_LOG_2PI = float(np.log(2.0 * np.pi))


def simulate_data(n: int = 4096, likelihood: str = "poisson", seed: int = 20261126) -> dict:
    """Simulate the model on an ``nx x nx`` lattice, ``nx = ceil(sqrt(n))``, with ``TRUTH``.

    Returns
    -------
    dict
        ``W`` (adjacency), ``shape`` ``(nx, nx)``, ``x`` (true field), ``y``, ``likelihood``
        and ``truth``.
    """
    if likelihood not in ("poisson", "gaussian"):
        raise ValueError(f"`likelihood` must be 'poisson' or 'gaussian', got {likelihood!r}.")
    nx = math.isqrt(int(n) - 1) + 1 if n > 1 else 1
    if nx < 2:
        raise ValueError(f"Need n >= 4 (a 2 x 2 lattice), got n={n}.")
    rng = np.random.default_rng(seed)
    W = lattice_adjacency(nx, nx)
    x = sample_gmrf(car_precision(W, TRUTH["alpha"], TRUTH["tau"]), rng=rng)
    if likelihood == "poisson":
        y = rng.poisson(np.exp(TRUTH["beta0"] + x))
    else:
        y = x + TRUTH["sigma"] * rng.standard_normal(x.size)
    return {
        "W": W,
        "shape": (nx, nx),
        "x": x,
        "y": y,
        "likelihood": likelihood,
        "truth": dict(TRUTH),
    }


def load_data(n: int = 4096, likelihood: str = "poisson") -> dict:
    """The default data set: the simulated lattice of :func:`simulate_data`."""
    return simulate_data(n, likelihood)


def _car_interpolated(name: str, W, alpha, tau) -> pt.TensorVariable:
    r"""CAR(0, W, alpha, tau) field whose :math:`\log\det(D-\alpha W)` comes from a table.

    The density is the one of :class:`~pymc_sparse.distributions.car.CAR`,
    :math:`\tfrac n2\log\tau + \tfrac12\log\det(D-\alpha W) - \tfrac\tau2 x^\top(D-\alpha W)x
    - \tfrac n2\log 2\pi`, with the log-determinant from
    :func:`pymc_sparse.logdet1d.table.car_logdet` (``method="interpolated"``: built once,
    certified, O(1) per evaluation).  ``x`` is a flat value variable with this potential.
    """
    pattern, d_data, w_data = car_structure(W)
    n = pattern.n
    x = pm.Flat(name, shape=(n,))
    B = SparseMatrix(pattern, pt.constant(d_data) - alpha * pt.constant(w_data))
    ld = car_logdet(pattern, d_data, w_data, alpha, method="interpolated", interval=(0.0, 1 - 1e-4))
    pm.Potential(
        f"{name}_prior",
        0.5 * n * pt.log(tau) + 0.5 * ld - 0.5 * tau * B.quad_form(x) - 0.5 * n * _LOG_2PI,
    )
    return x


def build_model(data: dict, logdet: str = "exact") -> pm.Model:
    """Model 4: the lattice CAR with ``data["likelihood"]`` observations.

    Parameters
    ----------
    data : dict
        From :func:`simulate_data`.
    logdet : {"exact", "interpolated"}
        ``"exact"``: :class:`~pymc_sparse.distributions.car.CAR` (a sparse factorisation
        per gradient).  ``"interpolated"``: the same density with the tabulated
        log-determinant (see :func:`_car_interpolated`).
    """
    if logdet not in ("exact", "interpolated"):
        raise ValueError(f"`logdet` must be 'exact' or 'interpolated', got {logdet!r}.")
    W = data["W"]
    y = np.asarray(data["y"])
    with pm.Model() as model:
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        tau = pm.Gamma("tau", alpha=2.0, beta=1.0)
        if logdet == "exact":
            x = CAR("x", mu=0.0, W=W, alpha=alpha, tau=tau, logdet="exact")
        else:
            x = _car_interpolated("x", W, alpha, tau)
        if data["likelihood"] == "poisson":
            beta0 = pm.Normal("beta0", 0.0, 2.0)
            pm.Poisson("y", mu=pm.math.exp(beta0 + x), observed=y)
        else:
            sigma = pm.HalfNormal("sigma", 1.0)
            pm.Normal("y", mu=x, sigma=sigma, observed=y)
    return model


def time_gradient(model: pm.Model, repeats: int = 3) -> float:
    """Best wall time (s) of one log-density + gradient evaluation at the initial point."""
    f = model.logp_dlogp_function(ravel_inputs=True)
    f.set_extra_values({})
    point = model.initial_point()
    q = np.concatenate([np.ravel(point[v.name]) for v in f._grad_vars])
    f(q)  # first call: factorisation analysis, table build, caches
    rng = np.random.default_rng(0)
    best = np.inf
    for _ in range(repeats):
        # A new point each time: the factor cache would answer a repeated point for free.
        qk = q + 1e-3 * rng.standard_normal(q.size)
        t0 = time.perf_counter()
        f(qk)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    """Simulate, sample, compare with the truth and render the fields."""
    import arviz as az

    from models.scotland_bym2 import add_sampling_args, sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096, help="number of sites (rounded up to nx^2)")
    p.add_argument("--likelihood", choices=["poisson", "gaussian"], default="poisson")
    p.add_argument("--logdet", choices=["exact", "interpolated"], default="interpolated")
    add_sampling_args(p, draws=300, tune=300, chains=2)
    args = p.parse_args(argv)

    data = load_data(args.n, args.likelihood)
    nx = data["shape"][0]
    print(
        f"lattice {nx} x {nx}: n = {nx * nx}, likelihood {args.likelihood}, "
        f"logdet {args.logdet}; truth {data['truth']}"
    )
    t0 = time.perf_counter()
    model = build_model(data, logdet=args.logdet)
    t_grad = time_gradient(model)
    print(
        f"model built + first gradient: {time.perf_counter() - t0:.1f} s; "
        f"one logp+gradient: {1e3 * t_grad:.1f} ms"
    )
    idata, wall = sample(model, args)
    names = ["alpha", "tau", "beta0" if args.likelihood == "poisson" else "sigma"]
    print(az.summary(idata, var_names=names))
    xm = idata.posterior["x"].mean(("chain", "draw")).values
    err = xm - data["x"]
    print(
        f"posterior mean field: rmse {np.sqrt(np.mean(err**2)):.3f} "
        f"(sd of the true field {np.std(data['x']):.3f}), "
        f"corr {np.corrcoef(xm, data['x'])[0, 1]:.3f}"
    )
    print(
        f"sampling wall time: {wall:.1f} s ({args.chains} chains x "
        f"({args.tune} tune + {args.draws} draws), sampler {args.sampler})"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUTPUT.mkdir(parents=True, exist_ok=True)
    obs = np.asarray(data["y"], dtype=float)
    shown = np.log1p(obs) if args.likelihood == "poisson" else obs
    panels = [
        ("true field x", data["x"]),
        ("data: log(1 + y)" if args.likelihood == "poisson" else "data y", shown),
        ("posterior mean of x", xm),
    ]
    lim = np.abs(data["x"]).max()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for k, (ax, (title, img)) in enumerate(zip(axes, panels, strict=True)):
        kw = {"vmin": -lim, "vmax": lim, "cmap": "RdBu_r"} if k != 1 else {"cmap": "viridis"}
        im = ax.imshow(np.asarray(img).reshape(data["shape"]), interpolation="nearest", **kw)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"proper CAR on a {nx} x {nx} lattice (n = {nx * nx})")
    fig.tight_layout()
    stem = f"lattice_car_n{nx * nx}"
    fig.savefig(OUTPUT / f"{stem}_field.png", dpi=90)
    plt.close(fig)
    az.plot_trace(idata, var_names=names)
    plt.tight_layout()
    plt.savefig(OUTPUT / f"{stem}_trace.png", dpi=80)
    plt.close("all")
    print(f"saved {OUTPUT / (stem + '_field.png')} and {OUTPUT / (stem + '_trace.png')}")
    return idata


if __name__ == "__main__":
    main()
