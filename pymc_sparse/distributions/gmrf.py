r"""``SparseGMRF``: a multivariate normal given by a sparse precision matrix.

The log-density is exact and normalised,

.. math:: \log p(x \mid \mu, Q) = \tfrac12 \log\det Q
          - \tfrac12 (x-\mu)^\top Q (x-\mu) - \tfrac n2 \log 2\pi ,

with :math:`\log\det Q` from the shared CHOLMOD factor (:func:`pymc_sparse.ops.logdet`,
gradient by the selected inverse) and the quadratic form in :math:`O(\mathrm{nnz})`
(:meth:`SparseMatrix.quad_form`).  Random draws use the same cached factor (Rue 2001).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pymc.distributions.dist_math import check_parameters
from pymc.distributions.distribution import Continuous, _support_point
from pymc.logprob.abstract import _logprob
from pytensor.graph.basic import Constant
from pytensor.tensor.random.op import RandomVariable

from pymc_sparse.distributions._utils import (
    check_support_length,
    core_numeric,
    core_param,
    is_finite,
    support_point_fill,
)
from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.sampling import sample_gmrf_numeric
from pymc_sparse.ops import logdet
from pymc_sparse.ops.matrix import SparseMatrix, as_sparse_matrix

__all__ = ["SparseGMRF", "SparseGMRFRV", "gmrf_logp"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def gmrf_logp(pattern: SparsityPattern, value, mu, data):
    r"""Symbolic :math:`\log N(x \mid \mu, Q^{-1})` for a sparse precision (batch over ``x``).

    ``value`` and ``mu`` have shape ``(..., n)``; the result has the batch shape.  The
    value is ``-inf`` where ``Q`` is not positive definite.
    """
    Q = SparseMatrix(pattern, data)
    n = pattern.n
    delta = pt.as_tensor_variable(value) - mu
    if delta.type.ndim == 1:
        quad = Q.quad_form(delta)
    else:
        flat = delta.reshape((-1, n)).T
        quad = Q.quad_form(flat).reshape(delta.shape[:-1])
    ld = logdet(Q)
    ok = is_finite(ld)
    logp = 0.5 * ld - 0.5 * quad - 0.5 * n * _LOG_2PI
    return pt.switch(ok, logp, -np.inf), ok


class SparseGMRFRV(RandomVariable):
    """RandomVariable of :class:`SparseGMRF`; the static pattern of ``Q`` is an Op prop.

    Inputs: ``mu`` (``(..., n)``) and ``data``, the lower-triangle values of ``Q`` in
    pattern order (``(nnz,)``, shared by the batch).
    """

    name = "sparse_gmrf"
    signature = "(m),(k)->(m)"
    dtype = "float64"
    _print_name = ("SparseGMRF", "\\operatorname{SparseGMRF}")
    __props__ = (*RandomVariable.__props__, "pattern")

    def __init__(self, pattern: SparsityPattern | None = None, **kwargs):
        if not isinstance(pattern, SparsityPattern):
            raise TypeError(f"`pattern` must be a SparsityPattern, got {type(pattern).__name__}.")
        self.pattern = pattern
        super().__init__(**kwargs)

    def make_node(self, rng, size, mu, data):
        """Check and cast the parameters, then build the node."""
        mu = pt.as_tensor_variable(mu)
        data = pt.as_tensor_variable(data)
        if mu.type.ndim < 1 or data.type.ndim < 1:
            raise TypeError("`mu` must have at least one dimension and `data` be a vector.")
        if mu.type.shape[-1] is not None and mu.type.shape[-1] != self.pattern.n:
            raise ValueError(
                f"`mu` has length {mu.type.shape[-1]} but Q is {self.pattern.n} x {self.pattern.n}."
            )
        if data.type.shape[-1] is not None and data.type.shape[-1] != self.pattern.nnz:
            raise ValueError(
                f"{self.pattern!r} needs {self.pattern.nnz} values, got {data.type.shape[-1]}."
            )
        return super().make_node(rng, size, pt.cast(mu, "float64"), pt.cast(data, "float64"))

    def rng_fn(self, rng, mu, data, size):
        """Draws ``mu + P' L^{-T} z`` with the cached factor (Rue 2001)."""
        data = core_numeric(data, 1)
        mu = np.asarray(mu, dtype=np.float64)
        if size is None:
            size = np.broadcast_shapes(mu.shape[:-1], data.shape[:-1])
        size = tuple(size)
        if data.ndim == 1:
            return sample_gmrf_numeric(self.pattern, data, size=size, rng=rng) + mu
        data = np.broadcast_to(data, (*size, data.shape[-1]))
        out = np.empty((*size, self.pattern.n))
        for idx in np.ndindex(*size):
            out[idx] = sample_gmrf_numeric(self.pattern, data[idx], rng=rng)
        return out + mu


@_logprob.register(SparseGMRFRV)
def sparse_gmrf_logp(op: SparseGMRFRV, values, rng, size, mu, data, **kwargs):
    """Log-density of :class:`SparseGMRF`, registered like pymc's ``PrecisionMvNormalRV``."""
    [value] = values
    data = core_param(data, 1, "precision matrices Q")
    logp, ok = gmrf_logp(op.pattern, value, mu, data)
    return check_parameters(logp, ok, msg="Q positive definite")


@_support_point.register(SparseGMRFRV)
def sparse_gmrf_support_point(op, rv, rng, size, mu, data):
    """Return the mean, broadcast to the shape of the variable."""
    return support_point_fill(op, size, [mu, data], mu)


class SparseGMRF(Continuous):
    r"""Gaussian Markov random field :math:`x \sim N(\mu, Q^{-1})` with sparse precision ``Q``.

    .. math:: \log p(x) = \tfrac12 \log\det Q - \tfrac12 (x-\mu)^\top Q (x-\mu)
              - \tfrac n2 \log 2\pi

    ========  ==========================================
    Support   :math:`x \in \mathbb{R}^n`
    Mean      :math:`\mu`
    Variance  :math:`Q^{-1}`
    ========  ==========================================

    Parameters
    ----------
    Q : SparseMatrix or scipy.sparse matrix or ndarray
        Symmetric positive-definite precision.  A :class:`~pymc_sparse.SparseMatrix` may
        have symbolic values that depend on other random variables (see
        :mod:`pymc_sparse.precision` for builders); its pattern is fixed.  A constant
        ``Q`` is checked for positive definiteness when the variable is created.
    mu : tensor_like of float, default 0
        Mean, broadcast to ``(..., n)``.  A batch of means (or ``size``/``shape``/``dims``)
        gives a batch of independent fields sharing ``Q``.

    Notes
    -----
    Unlike ``pm.MvNormal(mu, tau=Q)`` no dense ``n x n`` matrix is formed: the log-density
    and its gradient cost one sparse Cholesky factorisation (shared by value and gradient
    at one point) plus a selected inverse, and random draws reuse the factor.  Where ``Q``
    is not positive definite the log-density is ``-inf`` (a sampler rejects the point).

    References
    ----------
    .. [1] Rue, H. (2001). Fast sampling of Gaussian Markov random fields. *J. R. Stat.
       Soc. B* 63, 325-338.
    .. [2] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*. Chapman & Hall.

    Examples
    --------
    .. code-block:: python

        import pymc as pm
        import pymc_sparse as pms

        W = pms.precision.lattice_adjacency(30, 30)
        with pm.Model():
            alpha = pm.Uniform("alpha", 0, 1)
            tau = pm.Gamma("tau", 2, 2)
            Q = pms.precision.car_precision(W, alpha, tau)
            x = pms.SparseGMRF("x", Q=Q, mu=0.0)
    """

    rv_type = SparseGMRFRV

    @classmethod
    def rv_op(cls, mu, data, *, pattern, size=None, rng=None, dtype=None):
        """Build the RandomVariable node (the pattern becomes an Op prop)."""
        op = SparseGMRFRV(pattern=pattern)
        return op(mu, data, size=size, rng=rng)

    @classmethod
    def dist(cls, Q=None, mu=0.0, **kwargs):
        """Validate the inputs and create the unnamed variable (see the class docstring)."""
        if Q is None:
            raise TypeError("SparseGMRF needs a precision matrix `Q`.")
        Q = as_sparse_matrix(Q)
        check_support_length(kwargs, Q.n, f"Q ({Q.n} x {Q.n})")
        if not Q.pattern.has_full_diagonal:
            Q = Q.add_diagonal(0.0)
        if isinstance(Q.data, Constant):
            # A constant precision must be positive definite; say so now, not at sampling.
            CACHE.factor(Q.pattern, np.asarray(Q.data.data)).raise_if_failed()
        mu = pt.as_tensor_variable(mu)
        if mu.type.ndim >= 1 and mu.type.shape[-1] not in (None, 1, Q.n):
            raise ValueError(f"`mu` has length {mu.type.shape[-1]} but Q is {Q.n} x {Q.n}.")
        mu = pt.cast(mu, "float64") + pt.zeros(Q.n, dtype="float64")
        return super().dist([mu, Q.data], pattern=Q.pattern, **kwargs)
