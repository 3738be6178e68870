r"""``MaternSPDE``: a Matérn field on a triangle mesh as a sparse GMRF (the SPDE approach).

The nodal values :math:`x` of the P1 approximation of a Matérn field have precision
:math:`Q(\kappa,\tau)` (:mod:`pymc_sparse.spde.precision`); the log-density is exact,

.. math:: \log p(x) = \tfrac12\log\det Q - \tfrac12 (x-\mu)^\top Q (x-\mu)
          - \tfrac n2\log 2\pi,

with :math:`\log\det Q = 2n\log\tau + 2\log\det(G+\kappa^2 C) - \sum\log c_i` for
:math:`\alpha = 2` (:math:`\alpha = 1`: :math:`2n\log\tau + \log\det(G + \kappa^2C)`),
the pencil's log-determinant from the certified :math:`O(1)` table or one factorisation.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pymc.distributions.dist_math import check_parameters
from pymc.distributions.distribution import Continuous, _support_point
from pymc.logprob.abstract import _logprob
from pytensor.graph.basic import Constant
from pytensor.tensor.random.op import RandomVariable

try:  # pytensor >= 2.30 moved the graph walkers
    from pytensor.graph.traversal import graph_inputs as _graph_inputs
except ImportError:  # pragma: no cover - older pytensor
    from pytensor.graph.basic import graph_inputs as _graph_inputs

from pymc_sparse.distributions._utils import (
    as_scalar_param,
    constant_value,
    core_param,
    is_finite,
    support_point_fill,
)
from pymc_sparse.linalg.sampling import sample_gmrf_numeric
from pymc_sparse.ops.logdet import logdet as sparse_logdet
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.spde.mesh import TriangleMesh
from pymc_sparse.spde.precision import SPDEPrecision, kappa_tau, pc_prior_rates

__all__ = [
    "MaternSPDE",
    "MaternSPDERV",
    "matern_logdet",
    "matern_precision",
    "pc_matern_prior",
]

_LOG_2PI = float(np.log(2.0 * np.pi))
_METHODS = ("auto", "interpolated", "exact")


def _as_spde(mesh, alpha) -> SPDEPrecision:
    if isinstance(mesh, SPDEPrecision):
        if mesh.alpha != alpha:
            raise ValueError(f"`mesh` was built for alpha={mesh.alpha}, but alpha={alpha}.")
        return mesh
    if not isinstance(mesh, TriangleMesh):
        raise TypeError(
            f"`mesh` must be a TriangleMesh (pms.spde.mesh_from_points) or an SPDEPrecision, "
            f"got {type(mesh).__name__}."
        )
    return SPDEPrecision(mesh, alpha)


def matern_precision(spde: SPDEPrecision, kappa, tau) -> SparseMatrix:
    r"""Symbolic :math:`Q(\kappa, \tau)` as a :class:`SparseMatrix` (pattern fixed).

    Use it as the ``Q`` of :class:`~pymc_sparse.distributions.marginal.MarginalGMRFNormal`
    or :class:`~pymc_sparse.distributions.gmrf.SparseGMRF`.
    """
    s = pt.sqr(kappa)
    t2 = pt.sqr(tau)
    if spde.alpha == 1:
        data = t2 * (s * spde.c_data + spde.g_data)
    else:
        data = t2 * (pt.sqr(s) * spde.c_data + 2.0 * s * spde.g_data + spde.h_data)
    return SparseMatrix(spde.pattern, data)


def matern_logdet(spde: SPDEPrecision, kappa, tau, *, method: str = "auto", range_bounds=None):
    r"""Symbolic :math:`\log\det Q(\kappa, \tau)`, differentiable in both.

    Parameters
    ----------
    spde : SPDEPrecision
    kappa, tau : TensorVariable
        Scalars.
    method : {"auto", "interpolated", "exact"}
        ``"interpolated"``: the certified table of :math:`\log\det(G + sC)` in
        :math:`s = \kappa^2` (built once per mesh, cached; exact outside
        ``range_bounds``).  ``"exact"``: one factorisation of :math:`G + \kappa^2 C`
        (and a selected inverse for the gradient).  ``"auto"``: the table for a
        non-constant scalar :math:`\kappa`, exact otherwise.
    range_bounds : (float, float), optional
        Practical ranges covered by the table (default
        :meth:`SPDEPrecision.default_range_bounds`).
    """
    if method not in _METHODS:
        raise ValueError(f"`logdet` must be one of {_METHODS}, got {method!r}.")
    kappa = pt.as_tensor_variable(kappa)
    s = pt.sqr(kappa)
    # A constant kappa (also a graph of constants, e.g. sqrt(8) / range) needs no table.
    constant = all(isinstance(v, Constant) for v in _graph_inputs([kappa]))
    if method == "exact" or (method == "auto" and constant):
        f = sparse_logdet(SparseMatrix(spde.k_pattern, spde.k_g + s * spde.k_c))
    else:
        f = spde.logdet_family(range_bounds)(s)
    base = 2.0 * spde.n * pt.log(tau)
    return base + f if spde.alpha == 1 else base + 2.0 * f - spde.logdet_c


class MaternSPDERV(RandomVariable):
    """RandomVariable of :class:`MaternSPDE`; the mesh structure is an Op prop.

    Inputs: ``mu`` ``(..., n)``, ``kappa`` and ``tau`` (scalars).
    """

    name = "matern_spde"
    signature = "(m),(),()->(m)"
    dtype = "float64"
    _print_name = ("MaternSPDE", "\\operatorname{MaternSPDE}")
    __props__ = (*RandomVariable.__props__, "spde", "logdet", "range_bounds")

    def __init__(self, spde=None, logdet: str = "auto", range_bounds=None, **kwargs):
        if not isinstance(spde, SPDEPrecision):
            raise TypeError(f"`spde` must be an SPDEPrecision, got {type(spde).__name__}.")
        if logdet not in _METHODS:
            raise ValueError(f"`logdet` must be one of {_METHODS}, got {logdet!r}.")
        self.spde = spde
        self.logdet = logdet
        self.range_bounds = None if range_bounds is None else tuple(map(float, range_bounds))
        super().__init__(**kwargs)

    def make_node(self, rng, size, mu, kappa, tau):
        """Cast the parameters to float64 and build the node."""
        mu, kappa, tau = (pt.cast(pt.as_tensor_variable(v), "float64") for v in (mu, kappa, tau))
        return super().make_node(rng, size, mu, kappa, tau)

    def rng_fn(self, rng, mu, kappa, tau, size):
        r"""Exact draws ``mu + P' L^{-T} z`` from :math:`N(\mu, Q^{-1})` (Rue 2001)."""
        kappa, tau, mu = np.asarray(kappa), np.asarray(tau), np.asarray(mu, dtype=np.float64)
        if np.any(kappa <= 0) or np.any(tau <= 0):
            raise ValueError(f"MaternSPDE draws need kappa > 0 and tau > 0, got {kappa}, {tau}.")
        if size is None:
            size = np.broadcast_shapes(mu.shape[:-1], kappa.shape, tau.shape)
        size = tuple(size)
        pattern = self.spde.pattern
        if kappa.size == 1 and tau.size == 1:
            q = self.spde.values(float(kappa.ravel()[0]), float(tau.ravel()[0]))
            return sample_gmrf_numeric(pattern, q, size=size, rng=rng) + mu
        kappa, tau = np.broadcast_to(kappa, size), np.broadcast_to(tau, size)
        out = np.empty((*size, self.spde.n))
        for idx in np.ndindex(*size):
            q = self.spde.values(float(kappa[idx]), float(tau[idx]))
            out[idx] = sample_gmrf_numeric(pattern, q, rng=rng)
        return out + mu


def matern_logp(op: MaternSPDERV, value, mu, kappa, tau):
    """Exact log-density; ``-inf`` (finite gradient) outside kappa, tau > 0."""
    spde = op.spde
    n = spde.n
    valid = (kappa > 0) & (tau > 0)
    # A harmless point outside the support keeps value and gradient NaN-free (numpyro
    # ignores check_parameters).
    kappa_s = pt.switch(valid, kappa, 1.0)
    tau_s = pt.switch(valid, tau, 1.0)
    Q = matern_precision(spde, kappa_s, tau_s)
    delta = pt.as_tensor_variable(value) - mu
    if delta.type.ndim == 1:
        quad = Q.quad_form(delta)
    else:
        quad = Q.quad_form(delta.reshape((-1, n)).T).reshape(delta.shape[:-1])
    ld = matern_logdet(spde, kappa_s, tau_s, method=op.logdet, range_bounds=op.range_bounds)
    logp = 0.5 * ld - 0.5 * quad - 0.5 * n * _LOG_2PI
    ok = valid & is_finite(ld)
    return pt.switch(ok, logp, -np.inf), valid


@_logprob.register(MaternSPDERV)
def matern_spde_logp(op: MaternSPDERV, values, rng, size, mu, kappa, tau, **kwargs):
    """Log-density of :class:`MaternSPDE` (needs the Op's structure, hence registered)."""
    [value] = values
    kappa = core_param(kappa, 0, "kappa")
    tau = core_param(tau, 0, "tau")
    logp, valid = matern_logp(op, value, mu, kappa, tau)
    return check_parameters(logp, valid, msg="kappa > 0, tau > 0")


@_support_point.register(MaternSPDERV)
def matern_spde_support_point(op, rv, rng, size, mu, kappa, tau):
    """Return the mean, broadcast to the shape of the variable."""
    return support_point_fill(op, size, [mu, kappa, tau], mu)


class MaternSPDE(Continuous):
    r"""Matérn field on a triangle mesh, a sparse GMRF (Lindgren, Rue and Lindström 2011).

    .. math::

       x \sim N\big(\mu, Q(\kappa,\tau)^{-1}\big), \quad
       Q = \tau^2(\kappa^4 C + 2\kappa^2 G + G C^{-1} G)\ (\alpha = 2), \quad
       Q = \tau^2(\kappa^2 C + G)\ (\alpha = 1),

    the nodal values of the finite-element solution of
    :math:`(\kappa^2 - \Delta)^{\alpha/2}(\tau x) = \mathcal W`: in the mesh's interior
    its covariance approximates the Matérn covariance with smoothness
    :math:`\nu = \alpha - 1` (2-D), practical range :math:`\rho = \sqrt{8\nu}/\kappa` and
    marginal standard deviation :math:`\sigma`.  Values at any location ``s`` are
    ``mesh.projector(s) @ x``.

    ========  =============================================
    Support   :math:`x \in \mathbb{R}^n` (one value per mesh node)
    Mean      :math:`\mu`
    Variance  :math:`Q^{-1}` (about :math:`\sigma^2` in the interior)
    ========  =============================================

    Parameters
    ----------
    mesh : TriangleMesh or SPDEPrecision
        From :func:`pymc_sparse.spde.mesh_from_points`.
    range, sigma : tensor_like of float, optional
        Practical range and marginal sd (scalars); or give ``kappa`` and ``tau``.
    kappa, tau : tensor_like of float, optional
        The SPDE parameters.
    alpha : {1, 2}, default 2
        :math:`\alpha = 2` is Matérn :math:`\nu = 1`; :math:`\alpha = 1` (:math:`\nu =
        0` in 2-D) uses R-INLA's nominal :math:`\nu = 1/2` for range and sigma.
    mu : tensor_like of float, default 0
        Mean, broadcast to ``(..., n)``.
    logdet : {"auto", "interpolated", "exact"}, default "auto"
        See :func:`matern_logdet`: the table (built once per mesh: 15 s at n = 3,400 on
        one core) makes each later evaluation :math:`O(1)` in the log-determinant.
    range_bounds : (float, float), optional
        Practical ranges covered by the table.

    Notes
    -----
    Cost per log-density and gradient: the quadratic form (:math:`O(\mathrm{nnz})`) and
    the tabulated log-determinant; no factorisation once the table exists.  Use
    :func:`pc_matern_prior` for the PC prior of (range, sigma).  For Gaussian
    observations integrate the field out with ``MarginalGMRFNormal(Q=matern_precision(...),
    logdet_Q=matern_logdet(...), A=mesh.projector(locations))``.

    References
    ----------
    .. [1] Lindgren, F., Rue, H. and Lindström, J. (2011). An explicit link between
       Gaussian fields and Gaussian Markov random fields: the SPDE approach. *J. R.
       Stat. Soc. B* 73(4), 423-498.
    .. [2] Rue, H. (2001). Fast sampling of Gaussian Markov random fields. *J. R. Stat.
       Soc. B* 63, 325-338.

    Examples
    --------
    .. code-block:: python

        import pymc as pm
        from pymc_sparse.spde import mesh_from_points
        from pymc_sparse.distributions.matern import MaternSPDE, pc_matern_prior

        mesh = mesh_from_points(xy, max_edge=(0.05, 0.2), extension=0.5)
        A = mesh.projector(xy)
        with pm.Model():
            rho, sigma = pc_matern_prior("f", range0=0.1, p_range=0.05, sigma0=1, p_sigma=0.05)
            f = MaternSPDE("f", mesh=mesh, range=rho, sigma=sigma)
            pm.Normal("y", mu=pm.math.dot(A, f), sigma=0.1, observed=y)  # or a sparse dot
    """

    rv_type = MaternSPDERV

    @classmethod
    def rv_op(cls, mu, kappa, tau, *, spde, logdet="auto", range_bounds=None, size=None, rng=None):
        """Build the RandomVariable node (the mesh structure becomes an Op prop)."""
        op = MaternSPDERV(spde=spde, logdet=logdet, range_bounds=range_bounds)
        return op(mu, kappa, tau, size=size, rng=rng)

    @classmethod
    def dist(
        cls,
        mesh=None,
        range=None,  # the name users know from R-INLA
        sigma=None,
        *,
        kappa=None,
        tau=None,
        alpha: int = 2,
        mu=0.0,
        logdet: str = "auto",
        range_bounds=None,
        **kwargs,
    ):
        """Validate the inputs and create the unnamed variable (see the class docstring)."""
        if mesh is None:
            raise TypeError("MaternSPDE needs a `mesh` (pms.spde.mesh_from_points).")
        spde = _as_spde(mesh, alpha)
        given_rs = range is not None or sigma is not None
        given_kt = kappa is not None or tau is not None
        if given_rs == given_kt or (given_rs and (range is None or sigma is None)):
            raise TypeError("Give either `range` and `sigma`, or `kappa` and `tau`.")
        if given_kt and (kappa is None or tau is None):
            raise TypeError("Give both `kappa` and `tau`.")
        for v, name in ((range, "range"), (sigma, "sigma"), (kappa, "kappa"), (tau, "tau")):
            c = None if v is None else constant_value(v)
            if c is not None and c.size == 1 and not float(c.ravel()[0]) > 0:
                raise ValueError(f"`{name}` must be > 0, got {float(c.ravel()[0])}.")
        if given_rs:
            kappa, tau = kappa_tau(
                as_scalar_param(range, "range"), as_scalar_param(sigma, "sigma"), alpha
            )
        kappa = as_scalar_param(kappa, "kappa")
        tau = as_scalar_param(tau, "tau")
        mu = pt.as_tensor_variable(mu)
        n = spde.n
        if mu.type.ndim >= 1 and mu.type.shape[-1] not in (None, 1, n):
            raise ValueError(f"`mu` has length {mu.type.shape[-1]} but the mesh has {n} nodes.")
        mu = pt.cast(mu, "float64") + pt.zeros(n, dtype="float64")
        return super().dist(
            [mu, kappa, tau], spde=spde, logdet=logdet, range_bounds=range_bounds, **kwargs
        )


def pc_matern_prior(name: str, *, range0, p_range, sigma0, p_sigma):
    r"""PC prior of Fuglstad et al. (2019) for (range, sigma); returns the two variables.

    :math:`P(\rho < \rho_0) = p_\rho`, :math:`P(\sigma > \sigma_0) = p_\sigma`.  In 2-D
    the prior makes :math:`1/\rho \sim \mathrm{Exp}(\tilde\lambda_1)` and :math:`\sigma
    \sim \mathrm{Exp}(\tilde\lambda_2)` (:func:`pymc_sparse.spde.precision.pc_prior_rates`),
    so it creates ``{name}_inv_range``, the deterministic ``{name}_range`` and
    ``{name}_sigma`` in the current model.
    """
    import pymc as pm

    lam1, lam2 = pc_prior_rates(range0, p_range, sigma0, p_sigma)
    inv_range = pm.Exponential(f"{name}_inv_range", lam=lam1)
    rho = pm.Deterministic(f"{name}_range", 1.0 / inv_range)
    sigma = pm.Exponential(f"{name}_sigma", lam=lam2)
    return rho, sigma
