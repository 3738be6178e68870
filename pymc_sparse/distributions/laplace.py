r"""Non-Gaussian observations of a latent sparse GMRF, the field integrated out by Laplace.

.. math::

    x \sim N(\mu, Q^{-1})\ [\,Cx = 0\,], \qquad \eta = o + A x, \qquad
    y_k \mid \eta_k \sim p(y_k \mid \eta_k, \phi_k),

and :math:`\log p(y \mid \theta)` is replaced by its Laplace approximation at the mode
:math:`x^*` of :math:`x \mid y, \theta` (Rue, Martino & Chopin 2009), computed with sparse
Cholesky factors only; its gradient with respect to the values of :math:`Q`, :math:`\mu`,
:math:`o`, the values of :math:`A` and the family parameter comes from the implicit
function theorem (:mod:`pymc_sparse.linalg.laplace`).

References
----------
.. [1] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. J. R. Stat.
   Soc. B 71, 319-392.
.. [2] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*. Chapman & Hall/CRC.
.. [3] Margossian, C. C. et al. (2020). Hamiltonian Monte Carlo using an
   adjoint-differentiated Laplace approximation. NeurIPS 33.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pymc.distributions.dist_math import check_parameters
from pymc.distributions.distribution import Continuous, _support_point
from pymc.distributions.shape_utils import rv_size_is_none
from pymc.logprob.abstract import _logprob
from pytensor.tensor.random.op import RandomVariable
from scipy.special import expit

from pymc_sparse.distributions.marginal import _as_length
from pymc_sparse.linalg.laplace import sample_prior
from pymc_sparse.linalg.laplace.families import get_family
from pymc_sparse.linalg.laplace.structure import LaplaceStructure
from pymc_sparse.ops._index import const_index
from pymc_sparse.ops.laplace import LaplaceMarginal
from pymc_sparse.ops.matrix import _as_float64_vector, as_sparse_matrix

__all__ = ["LaplaceGMRF", "LaplaceGMRFRV"]


class LaplaceGMRFRV(RandomVariable):
    """Observations of a latent GMRF: inputs ``(q, mu, offset, a, n_trials, phi)``.

    ``structure`` (a :class:`~pymc_sparse.linalg.laplace.structure.LaplaceStructure`)
    holds the patterns of :math:`Q` and :math:`A`, the family and the constraint.  Draws
    sample the field exactly from its (constrained) prior, then the observations.
    """

    name = "laplace_gmrf"
    signature = "(k),(n),(m),(a),(m),(m)->(m)"
    dtype = "floatX"
    _print_name = ("LaplaceGMRF", "\\operatorname{LaplaceGMRF}")
    __props__ = (*RandomVariable.__props__, "structure", "tol")

    def __init__(self, structure: LaplaceStructure, tol: float = 1e-10, **kwargs):
        self.structure = structure
        self.tol = float(tol)
        super().__init__(**kwargs)

    def rng_fn(self, rng, q, mu, offset, a, n_trials, phi, size):
        """Draw ``x`` from its prior, then ``y | eta = offset + A x``."""
        if any(np.ndim(v) != 1 for v in (q, mu, offset, a, n_trials, phi)):
            raise NotImplementedError("LaplaceGMRF does not support batched parameters.")
        s = self.structure
        size = () if size is None else tuple(size)
        x = sample_prior(s, q, mu, size=size, rng=rng).reshape(-1, s.n)
        eta = offset + (s.A_csr(a) @ x.T).T
        fam = s.family.name
        if fam in ("poisson", "negative_binomial"):
            mean = np.exp(eta)
            if fam == "poisson":
                y = rng.poisson(mean)
            else:
                y = rng.negative_binomial(phi, phi / (phi + mean))
        elif fam in ("binomial", "bernoulli"):
            n = n_trials if fam == "binomial" else np.ones_like(eta)
            y = rng.binomial(n.astype(np.int64), expit(eta))
        else:
            y = eta + phi * rng.standard_normal(eta.shape)
        return np.asarray(y, dtype=np.float64).reshape((*size, s.m))


class LaplaceGMRF(Continuous):
    r"""Observations of a latent sparse GMRF with the field integrated out (Laplace).

    .. math::

        x \sim N(\mu, Q^{-1}), \quad \eta = o + A x, \quad y_k \sim p(y_k \mid \eta_k),
        \qquad \log p(y \mid \theta) \approx \log p(y \mid x^*) + \log p(x^*)
        + \tfrac{n}{2}\log 2\pi - \tfrac12 \log\det(Q + A^\top W A),

    with :math:`x^*` the mode of :math:`x \mid y, \theta` and :math:`W = -\partial^2_\eta
    \log p(y \mid \eta)` there (Rue, Martino & Chopin 2009).  Exact for the normal family
    (it then equals :class:`~pymc_sparse.distributions.marginal.MarginalGMRFNormal`).
    Use it as the likelihood of ``observed`` data; a point where the inner Newton
    iteration fails or a precision is not positive definite has log-density ``-inf``.

    ========  ============================================================
    Support   the family's (counts, successes, reals), length ``m``
    Families  ``poisson`` (``exposure``), ``binomial`` (``n_trials``),
              ``bernoulli``, ``negative_binomial`` (``dispersion``:
              variance :math:`\mu + \mu^2/\alpha`), ``normal`` (``sigma``)
    ========  ============================================================

    Parameters
    ----------
    Q : SparseMatrix, scipy.sparse matrix or ndarray
        Prior precision of the latent field (``n x n``); its values may be symbolic.  With
        ``constraint="components"`` a component's block may be intrinsic (null vector 1,
        as ICAR's :math:`\tau(D - W)`).
    mu : tensor_like, default 0
        Prior mean: scalar or length ``n``.
    A : None, scipy.sparse matrix, ndarray, ObservationMatrix or tuple
        Constant design of :math:`\eta = o + Ax` (``None``: identity), or
        ``(structure, values)`` with symbolic ``values`` in the CSR order of
        ``structure`` (explicit zeros of ``structure`` are kept as entries).
    family : str
    offset, exposure : tensor_like, optional
        Added to :math:`\eta`; ``exposure`` adds :math:`\log E` (log-link families).
    n_trials : tensor_like, optional
        Binomial trials (required for ``binomial``).
    dispersion : tensor_like, optional
        Negative-binomial :math:`\alpha` (required for ``negative_binomial``).
    sigma : tensor_like, optional
        Normal noise sd (default 1 for ``normal``).
    constraint : None, "components" or ndarray (k, n)
        :math:`Cx = 0`: one sum-to-zero row per connected component of :math:`Q`'s graph
        with at least two nodes, or a dense matrix (then :math:`Q` must be proper).

    Examples
    --------
    A Poisson disease map with a proper CAR field::

        with pm.Model():
            tau = pm.Gamma("tau", 2, 1)
            alpha = pm.Uniform("alpha", 0, 1)
            Q = tau * (pms.SparseMatrix.from_scipy(D) - alpha * pms.SparseMatrix.from_scipy(W))
            b0 = pm.Normal("b0", 0, 2)
            LaplaceGMRF("y", Q=Q, mu=b0, family="poisson", exposure=E, observed=y)
    """

    rv_type = LaplaceGMRFRV

    @classmethod
    def dist(
        cls,
        Q,
        mu=0.0,
        A=None,
        family="poisson",
        offset=None,
        exposure=None,
        n_trials=None,
        dispersion=None,
        sigma=None,
        constraint=None,
        **kwargs,
    ):
        """Build the variable; see the class docstring for the parameters."""
        Q = as_sparse_matrix(Q)
        fam = get_family(family)
        a_values = None
        if isinstance(A, tuple):
            A, a_values = A
        s = LaplaceStructure(Q.pattern, A, fam, constraint)
        if a_values is None:
            a_values = pt.constant(s.a_default)
        a_values = _as_length(
            _as_float64_vector(a_values, "A values"),
            s.a_default.size,
            "A values",
            "the nonzeros of A",
        )
        mu = _as_length(mu, s.n, "mu", "the latent field's n")
        off = _as_length(0.0 if offset is None else offset, s.m, "offset", "the observations m")
        if exposure is not None:
            if not fam.log_link:
                raise ValueError(
                    f"`exposure` needs a log-link family (poisson, negative_binomial), not "
                    f"{fam.name!r}; add log(exposure) to `offset` instead."
                )
            off = off + pt.log(_as_length(exposure, s.m, "exposure", "the observations m"))
        given = {"n_trials": n_trials, "dispersion": dispersion, "sigma": sigma}
        wanted = {"binomial": "n_trials", "negative_binomial": "dispersion", "normal": "sigma"}
        for name, val in given.items():
            if val is not None and wanted.get(fam.name) != name:
                raise ValueError(f"`{name}` does not apply to the {fam.name!r} family.")
        if fam.name == "binomial" and n_trials is None:
            raise ValueError("The 'binomial' family needs `n_trials`.")
        if fam.name == "negative_binomial" and dispersion is None:
            raise ValueError("The 'negative_binomial' family needs `dispersion`.")
        ntr = _as_length(1.0 if n_trials is None else n_trials, s.m, "n_trials", "m")
        p = dispersion if fam.name == "negative_binomial" else sigma
        phi = _as_length(1.0 if p is None else p, s.m, fam.param or "phi", "the observations m")
        return super().dist([Q.data, mu, off, a_values, ntr, phi], structure=s, **kwargs)

    @classmethod
    def rv_op(cls, q, mu, off, a, ntr, phi, *, structure, size=None, rng=None):
        """Apply a :class:`LaplaceGMRFRV` with this structure."""
        return LaplaceGMRFRV(structure)(q, mu, off, a, ntr, phi, size=size, rng=rng)


@_logprob.register(LaplaceGMRFRV)
def _laplace_gmrf_logprob(op, values, rng, size, q, mu, off, a, ntr, phi, **kwargs):
    (value,) = values
    if value.type.ndim != 1:
        raise NotImplementedError("LaplaceGMRF supports a single vector of observations.")
    value = pt.cast(value, "float64")
    logp = LaplaceMarginal(op.structure, op.tol)(q, mu, off, a, value, ntr, phi)
    logp = pt.switch(pt.isnan(logp), -np.inf, logp)
    if op.structure.family.param:
        return check_parameters(logp, pt.all(phi > 0), msg=f"{op.structure.family.param} > 0")
    return logp


@_support_point.register(LaplaceGMRFRV)
def _laplace_gmrf_support_point(op, rv, rng, size, q, mu, off, a, ntr, phi):
    s = op.structure
    eta = off + pt.inc_subtensor(
        pt.zeros(s.m, dtype="float64")[const_index(s.a_rows)], a * mu[const_index(s.a_cols)]
    )
    fam = s.family.name
    if fam in ("poisson", "negative_binomial"):
        point = pt.floor(pt.exp(eta))
    elif fam == "binomial":
        point = pt.floor(ntr * pt.sigmoid(eta))
    elif fam == "bernoulli":
        point = pt.round(pt.sigmoid(eta))
    else:
        point = eta
    if not rv_size_is_none(size):
        point = pt.full((*size, s.m), point)
    return point
