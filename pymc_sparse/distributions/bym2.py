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
from pymc_sparse.precision.graph import read_adjacency, validate_adjacency
from pymc_sparse.precision.scaling import scaling_factor

__all__ = ["BYM2"]


def _check_dims(model: pm.Model, dims, n: int) -> None:
    """Raise unless the last of ``dims`` has ``n`` coordinates (the nodes of ``W``)."""
    if dims is None:
        return
    dims = (dims,) if isinstance(dims, str) else tuple(dims)
    if not dims:
        return
    last = dims[-1]
    if last not in model.dim_lengths:
        raise KeyError(f"Dimension {last!r} of BYM2 is unknown to the model; add it to coords.")
    length = model.dim_lengths[last]
    length = int(length.eval()) if hasattr(length, "eval") else int(length)
    if length != n:
        raise ValueError(
            f"BYM2 dims {last!r} has {length} coordinates but W has {n} nodes. The areas of "
            f"the effect are the nodes of W: give {last!r} exactly {n} values, in W's order."
        )


def BYM2(
    name: str,
    W,
    sigma,
    rho,
    *,
    dims=None,
    scaling: str = "inla",
    u_name: str | None = None,
    v_name: str | None = None,
    zero_sum_stdev: float | None = None,
    model: pm.Model | None = None,
):
    r"""Create a BYM2 random effect in the current model (non-centred).

    .. math:: b_i = \sigma\Big(\sqrt{\rho / s_{c(i)}}\; u_i + \sqrt{1-\rho}\; v_i\Big)

    Three variables are added to the model:

    * ``f"{name}_u"`` (or ``u_name``): unit :class:`~pymc_sparse.distributions.icar.ICAR`
      on ``W`` with a sum-to-zero constraint per connected component, exact unless
      ``zero_sum_stdev`` is given (the notebooks' ``phi``);
    * ``f"{name}_v"`` (or ``v_name``): iid standard normal, shape ``(n,)`` (the
      notebooks' ``theta``);
    * ``name``: the Deterministic :math:`b`, which is returned.

    Parameters
    ----------
    name : str
    W : ndarray, scipy.sparse matrix, PyTensor constant or shared variable
        Symmetric non-negative adjacency matrix, binary or weighted (as for
        :class:`~pymc_sparse.distributions.icar.ICAR`).
    sigma : tensor_like of float
        Marginal standard deviation of the effect, :math:`\sigma > 0` (give it a prior
        supported on the positive reals, e.g. ``pm.HalfNormal``).
    rho : tensor_like of float
        Proportion of variance that is spatial, :math:`0 \le \rho \le 1` (e.g. a
        ``pm.Beta`` prior).
    dims : str or tuple of str, optional
        Dimension name of the areas, used for all three variables; its length must be the
        number of nodes of ``W`` (checked here).
    scaling : {"inla", "exact"}
        How the scaling factor is computed (:func:`~pymc_sparse.precision.scaling_factor`).
    u_name, v_name : str, optional
        Names of the structured and unstructured components, default ``f"{name}_u"`` and
        ``f"{name}_v"``; pass e.g. ``u_name="phi", v_name="theta"`` to keep the names of
        a hand-written BYM2 (for ``var_names=``, ``pm.do``, saved traces).
    zero_sum_stdev : float, optional
        Passed to the ICAR component: None (default) for the exact constraint, a number
        for ``pm.ICAR``'s soft one (0.001 is ``pm.ICAR``'s default; see
        :class:`~pymc_sparse.distributions.icar.ICAR` and ``docs/migration.md`` for when
        a sampler prefers it).
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
    W_value, W_source = read_adjacency(W)
    Wv = validate_adjacency(W_value)
    r = constant_value(rho)
    if r is not None and r.size == 1 and not (0 <= float(r.ravel()[0]) <= 1):
        raise ValueError(f"`rho` must lie in [0, 1], got {float(r.ravel()[0])}.")
    s_ = constant_value(sigma)
    if s_ is not None and s_.size == 1 and not float(s_.ravel()[0]) > 0:
        raise ValueError(f"`sigma` must be > 0, got {float(s_.ravel()[0])}.")
    n = Wv.shape[0]
    model = pm.modelcontext(model)
    _check_dims(model, dims, n)
    s = scaling_factor(Wv, per_node=True, method=scaling)
    connected = bool(np.all(s == s[0]))
    with model:
        # A shared W goes to ICAR as it is, so that a later pm.set_data on it raises.
        u = ICAR(
            u_name or f"{name}_u",
            W=Wv if W_source is None else W_source,
            sigma=1.0,
            zero_sum_stdev=zero_sum_stdev,
            singletons="iid",
            dims=dims,
        )
        v = pm.Normal(
            v_name or f"{name}_v", 0.0, 1.0, shape=None if dims is not None else (n,), dims=dims
        )
        rho = pt.as_tensor_variable(rho)
        sigma = pt.as_tensor_variable(sigma)
        if connected:
            # sqrt(rho / s) is one scalar: no vector of factors, no extra multiply per node
            # in each pass over b (PyTensor keeps a constant factor inside the loop).
            spatial = pt.sqrt(rho * (1.0 / float(s[0])))
        else:
            spatial = pt.sqrt(rho) * pt.constant(1.0 / np.sqrt(s))
        b = sigma * (spatial * u + pt.sqrt(1.0 - rho) * v)
        return pm.Deterministic(name, b, dims=dims)
