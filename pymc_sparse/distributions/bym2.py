r"""BYM2 (Riebler et al. 2016): a scaled ICAR plus iid noise, mixed by :math:`\rho`.

.. math:: b = \sigma\Big(\sqrt{\rho / s}\; u + \sqrt{1-\rho}\; v\Big), \qquad
          u \sim \text{ICAR}(W, 1), \quad v \sim N(0, I),

with :math:`s` the ICAR scaling factor (geometric mean of the constrained marginal
variances, :func:`~pymc_sparse.precision.scaling_factor`), so that
:math:`u/\sqrt s` has generalised variance 1, :math:`\sigma` is the marginal standard
deviation of :math:`b` and :math:`\rho` the share of it that is spatially structured.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from pymc_sparse.distributions._utils import constant_value
from pymc_sparse.distributions.icar import ICAR
from pymc_sparse.precision.graph import validate_adjacency
from pymc_sparse.precision.scaling import scaling_factor

__all__ = ["BYM2"]


def BYM2(
    name: str,
    W,
    sigma,
    rho,
    *,
    dims=None,
    scaling: str = "inla",
    model: pm.Model | None = None,
):
    r"""Create a BYM2 random effect in the current model (non-centred).

    .. math:: b_i = \sigma\Big(\sqrt{\rho / s_{c(i)}}\; u_i + \sqrt{1-\rho}\; v_i\Big)

    Three variables are added to the model:

    * ``f"{name}_u"``: unit :class:`~pymc_sparse.distributions.icar.ICAR` on ``W`` with a
      hard sum-to-zero constraint per connected component;
    * ``f"{name}_v"``: iid standard normal, shape ``(n,)``;
    * ``name``: the Deterministic :math:`b`, which is returned.

    Parameters
    ----------
    name : str
    W : ndarray or scipy.sparse matrix
        Symmetric non-negative adjacency matrix, binary or weighted.
    sigma : tensor_like of float
        Marginal standard deviation of the effect, :math:`\sigma > 0` (give it a prior
        supported on the positive reals, e.g. ``pm.HalfNormal``).
    rho : tensor_like of float
        Proportion of variance that is spatial, :math:`0 \le \rho \le 1` (e.g. a
        ``pm.Beta`` prior).
    dims : str or tuple of str, optional
        Dimension name of the areas, used for all three variables.
    scaling : {"inla", "exact"}
        How the scaling factor is computed (:func:`~pymc_sparse.precision.scaling_factor`).
    model : pm.Model, optional

    Returns
    -------
    TensorVariable
        The Deterministic ``name``.

    Notes
    -----
    Disconnected graphs follow R-INLA (Freni-Sterrantino et al. 2018): each connected
    component is scaled by its own factor :math:`s_c` and carries its own sum-to-zero
    constraint; a node without neighbours has :math:`s = 1` and an iid :math:`u_i \sim
    N(0, 1)`, so :math:`b_i \sim N(0, \sigma^2)` (no spatial smoothing, same marginal
    variance).  Constant ``sigma``/``rho`` outside their domain raise here.

    References
    ----------
    .. [1] Riebler, A., Sørbye, S. H., Simpson, D. and Rue, H. (2016). An intuitive
       Bayesian spatial model for disease mapping that accounts for scaling. *Statistical
       Methods in Medical Research* 25(4), 1145-1165.
    .. [2] Freni-Sterrantino, A., Ventrucci, M. and Rue, H. (2018). A note on intrinsic
       conditional autoregressive models for disconnected graphs. *Spatial and
       Spatio-temporal Epidemiology* 26, 25-34.

    Examples
    --------
    .. code-block:: python

        with pm.Model(coords={"area": names}):
            sigma = pm.HalfNormal("sigma", 1.0)
            rho = pm.Beta("rho", 0.5, 0.5)
            b = pms.BYM2("b", W=W, sigma=sigma, rho=rho, dims="area")
            pm.Poisson("y", mu=E * pm.math.exp(beta0 + b), observed=y, dims="area")
    """
    W = validate_adjacency(W)
    r = constant_value(rho)
    if r is not None and r.size == 1 and not (0 <= float(r.ravel()[0]) <= 1):
        raise ValueError(f"`rho` must lie in [0, 1], got {float(r.ravel()[0])}.")
    s_ = constant_value(sigma)
    if s_ is not None and s_.size == 1 and not float(s_.ravel()[0]) > 0:
        raise ValueError(f"`sigma` must be > 0, got {float(s_.ravel()[0])}.")
    n = W.shape[0]
    s = scaling_factor(W, per_node=True, method=scaling)
    inv_sqrt_s = pt.constant(1.0 / np.sqrt(s))
    model = pm.modelcontext(model)
    with model:
        u = ICAR(f"{name}_u", W=W, sigma=1.0, singletons="iid", dims=dims)
        v = pm.Normal(f"{name}_v", 0.0, 1.0, shape=None if dims is not None else (n,), dims=dims)
        rho = pt.as_tensor_variable(rho)
        sigma = pt.as_tensor_variable(sigma)
        b = sigma * (pt.sqrt(rho) * inv_sqrt_s * u + pt.sqrt(1.0 - rho) * v)
        return pm.Deterministic(name, b, dims=dims)
