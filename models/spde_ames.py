"""Matérn (nu = 1) field for house prices in Ames, Iowa: the SPDE approach vs ``pm.gp``.

Data: 2,930 sales with coordinates (``models/data/ames_housing_points.csv``, provenance
in ``models/data/SOURCE.md``); response ``y = log(sale_price / gr_liv_area)`` (log price
per square foot), centred; coordinates projected to kilometres.

The model (the same for both formulations)::

    b0          ~ Normal(0, 1)                      intercept (y is centred)
    1 / range   ~ Exponential(lam1)                  PC prior: P(range < 0.3 km) = 0.05
    sigma       ~ Exponential(lam2)                  PC prior: P(sigma > 1) = 0.05
    noise       ~ HalfNormal(0.5)                    nugget sd
    f           ~ Matérn(nu = 1, range, sigma)       spatial field
    y_k         ~ Normal(b0 + f(s_k), noise)

* ``build_model(data, mesh)``: ``f`` is the SPDE field (alpha = 2) on a mesh, integrated
  out exactly with :class:`~pymc_sparse.distributions.marginal.MarginalGMRFNormal` through
  the projector ``A``; ``log det Q`` from the certified table in ``kappa^2``.
* ``build_gp_model(data)``: ``pm.gp.Marginal`` with the exact Matérn nu = 1 covariance
  :class:`Matern1` (``scipy``'s ``kv`` through ``pt.kv``), dense ``O(m^3)``: run it on a
  subset.

Run ``python -m models.spde_ames [--subset 400]`` to fit both and print a comparison.
"""

from __future__ import annotations

import argparse
import csv
import math
import time

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pytensor.scalar.basic import UnaryScalarOp, upgrade_to_float
from pytensor.tensor.elemwise import Elemwise
from scipy import special

from models._data import DATA_DIR
from pymc_sparse.distributions.marginal import MarginalGMRFNormal
from pymc_sparse.distributions.matern import matern_logdet, matern_precision, pc_matern_prior
from pymc_sparse.spde.mesh import mesh_from_points
from pymc_sparse.spde.precision import SPDEPrecision, kappa_tau

__all__ = ["Matern1", "build_gp_model", "build_mesh", "build_model", "load_ames"]

#: PC prior of (range [km], sigma): P(range < RANGE0) = P_RANGE, P(sigma > SIGMA0) = P_SIGMA.
PRIOR = {"range0": 0.3, "p_range": 0.05, "sigma0": 1.0, "p_sigma": 0.05}


def load_ames(subset: int | None = None, seed: int = 0) -> dict:
    """Read the Ames sales: ``xy`` (km), centred ``y``, and the centring offset.

    ``subset`` draws that many sales at random (fixed ``seed``) without replacement.
    """
    with (DATA_DIR / "ames_housing_points.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != 2930:
        raise ValueError(
            f"ames_housing_points.csv: expected 2930 rows (SOURCE.md), read {len(rows)}."
        )
    lon = np.array([float(r["longitude"]) for r in rows])
    lat = np.array([float(r["latitude"]) for r in rows])
    price = np.array([float(r["sale_price"]) for r in rows])
    area = np.array([float(r["gr_liv_area"]) for r in rows])
    lat0, lon0 = float(np.mean(lat)), float(np.mean(lon))
    # Equirectangular projection: the town spans ~10 km, where its error is < 0.01 %.
    xy = np.column_stack(
        [(lon - lon0) * 111.32 * math.cos(math.radians(lat0)), (lat - lat0) * 110.57]
    )
    y = np.log(price / area)
    offset = float(np.mean(y))
    idx = np.arange(len(rows))
    if subset is not None:
        idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=subset, replace=False))
    return {"xy": xy[idx], "y": y[idx] - offset, "offset": offset, "index": idx}


def build_mesh(xy, max_edge=(0.2, 1.0), extension=3.0, **kwargs):
    """Mesh of the sale locations (km): fine inside their hull, 3 km outer extension."""
    return mesh_from_points(xy, max_edge=max_edge, extension=extension, **kwargs)


def build_model(data: dict, mesh=None, *, logdet: str = "auto", range_bounds=(0.1, 50.0)):
    """The SPDE model with the field integrated out (see the module docstring)."""
    mesh = build_mesh(data["xy"]) if mesh is None else mesh
    spde = SPDEPrecision(mesh, alpha=2)
    A = mesh.projector(data["xy"])
    with pm.Model() as model:
        b0 = pm.Normal("b0", 0.0, 1.0)
        rho, sigma = pc_matern_prior("field", **PRIOR)
        noise = pm.HalfNormal("noise", 0.5)
        kappa, tau = kappa_tau(rho, sigma, alpha=2)
        MarginalGMRFNormal(
            "y",
            Q=matern_precision(spde, kappa, tau),
            logdet_Q=matern_logdet(spde, kappa, tau, method=logdet, range_bounds=range_bounds),
            mu=b0,
            A=A,
            sigma=noise,
            observed=data["y"],
        )
    model.mesh = mesh  # for prediction (projector) after the fit
    return model


class _BesselK(UnaryScalarOp):
    r"""Modified Bessel function :math:`K_0` or :math:`K_1` (SciPy's ``k0``/``k1`` ufuncs).

    ``pt.kv(1, u)`` calls the general-order ``scipy.special.kve`` (AMOS), about seven
    times slower per entry than the order-specific ``k1``; its gradient calls it again
    for :math:`K_0`.  With :math:`K_0' = -K_1` and :math:`K_1' = -K_0 - K_1/u`, the
    gradient of :math:`uK_1(u)` is :math:`-uK_0(u)`: one ``k1`` and one ``k0`` per entry.
    """

    def __init__(self, order: int):
        self.order = int(order)
        self.nfunc_spec = (f"scipy.special.k{self.order}", 1, 1)
        super().__init__(upgrade_to_float, name=f"k{self.order}")

    def __eq__(self, other):
        return type(self) is type(other) and self.order == other.order

    def __hash__(self):
        return hash((type(self), self.order))

    def impl(self, x):
        """Evaluate with SciPy."""
        return (special.k0 if self.order == 0 else special.k1)(x)

    def L_op(self, inputs, outputs, output_grads):
        """:math:`K_0' = -K_1`, :math:`K_1' = -K_0 - K_1/u`."""
        (x,), (out,), (g,) = inputs, outputs, output_grads
        if self.order == 0:
            return [-g * _k1_scalar(x)]
        return [-g * (_k0_scalar(x) + out / x)]

    def c_code(self, *args, **kwargs):
        """No C implementation: Elemwise calls the SciPy ufunc on the whole array."""
        raise NotImplementedError()


_k0_scalar, _k1_scalar = _BesselK(0), _BesselK(1)
bessel_k0, bessel_k1 = Elemwise(_k0_scalar), Elemwise(_k1_scalar)


class Matern1(pm.gp.cov.Stationary):
    r"""Matérn covariance with :math:`\nu = 1`: :math:`(r/\ell) K_1(r/\ell)`, :math:`\ell=1/\kappa`.

    The covariance of the SPDE field with :math:`\alpha = 2` in 2-D (``pm.gp`` has
    :math:`\nu = 1/2, 3/2, 5/2` only).  With practical range :math:`\rho`,
    :math:`\ell = \rho/\sqrt 8`.  :math:`K_1` and the :math:`K_0` of its gradient come
    from SciPy's order-specific ufuncs (:class:`_BesselK`), the fastest exact option.
    """

    def full(self, X, Xs=None):
        """Covariance matrix between the rows of ``X`` and ``Xs``."""
        X, Xs = self._slice(X, Xs)
        u = self.euclidean_dist(X, Xs)  # already divided by ls; > 0 (pymc adds 1e-12)
        return pt.switch(u > 1e-8, u * bessel_k1(u), 1.0)


def build_gp_model(data: dict):
    """The same model with ``pm.gp.Marginal`` and the dense Matérn nu = 1 covariance."""
    with pm.Model() as model:
        b0 = pm.Normal("b0", 0.0, 1.0)
        rho, sigma = pc_matern_prior("field", **PRIOR)
        noise = pm.HalfNormal("noise", 0.5)
        cov = sigma**2 * Matern1(2, ls=rho / math.sqrt(8.0))
        gp = pm.gp.Marginal(mean_func=pm.gp.mean.Constant(b0), cov_func=cov)
        gp.marginal_likelihood("y", X=data["xy"], y=data["y"], sigma=noise)
    model.gp = gp
    return model


def main() -> None:  # pragma: no cover - command-line entry point
    """Fit the SPDE model to all sales and both models to a subset; print a comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=400)
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    for name, data in (("all", load_ames()), ("subset", load_ames(args.subset))):
        t0 = time.perf_counter()
        model = build_model(data)
        with model:
            idata = pm.sample(args.draws, tune=args.draws, chains=2, random_seed=1)
        post = idata.posterior
        print(
            f"SPDE {name} (m={data['y'].size}, n={model.mesh.n}): {time.perf_counter() - t0:.0f} s;"
            f" range {float(post['field_range'].mean()):.3f} km, sigma "
            f"{float(post['field_sigma'].mean()):.3f}, noise {float(post['noise'].mean()):.3f}"
        )
    t0 = time.perf_counter()
    with build_gp_model(data):
        idata = pm.sample(args.draws, tune=args.draws, chains=2, random_seed=1)
    post = idata.posterior
    print(
        f"pm.gp subset (m={data['y'].size}): {time.perf_counter() - t0:.0f} s; range "
        f"{float(post['field_range'].mean()):.3f} km, sigma "
        f"{float(post['field_sigma'].mean()):.3f}, noise {float(post['noise'].mean()):.3f}"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
