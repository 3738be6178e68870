r"""Gaussian observations of a latent GMRF, with the latent field integrated out exactly.

Model
-----
A latent field :math:`x \sim N(\mu, Q(\theta)^{-1})` with a sparse precision, observed
through a constant sparse design :math:`A` (``m x n``: the identity, a row selection of
the identity for missing data, or any sparse design) with independent Gaussian noise,

.. math:: y = A x + e, \qquad e \sim N(0, \operatorname{diag}(\sigma^2)).

Then :math:`y \mid \theta \sim N(A\mu,\ \operatorname{diag}(\sigma^2) + A Q^{-1} A^\top)`,
a dense ``m x m`` covariance that is never formed.  With :math:`D =
\operatorname{diag}(\sigma^{-2})`, :math:`r = y - A\mu`, :math:`c = A^\top D r` and the
posterior precision :math:`Q_{\mathrm{post}} = Q + A^\top D A` (sparse, its pattern the
union of those of :math:`Q` and :math:`A^\top A`, known when the graph is built), the
matrix determinant lemma and the Woodbury identity give

.. math::

    \log p(y \mid \theta) = \tfrac12 \log\det Q - \tfrac12 \log\det Q_{\mathrm{post}}
        - \tfrac12 \sum_{k=1}^m \log(2\pi\sigma_k^2)
        - \tfrac12 \left(r^\top D r - c^\top Q_{\mathrm{post}}^{-1} c\right).

The quadratic term is evaluated as :math:`(r - Ab)^\top D (r - Ab) + b^\top Q b` with
:math:`b = Q_{\mathrm{post}}^{-1} c` (the same number: the minimum of the penalised least
squares :math:`(r - Ax)^\top D (r - Ax) + x^\top Q x`), a sum of two non-negative
terms, rather than as the difference above, which loses every digit as
:math:`\sigma \to 0`.

Every term is a sparse Op of :mod:`pymc_sparse.ops` (log-determinants and one solve), so
one evaluation of the log-density and its gradient costs two numeric Cholesky
factorisations (of :math:`Q` and :math:`Q_{\mathrm{post}}`), both shared through the
factor cache by the value, the gradient and the extra solve of the gradient.

The values of :math:`A^\top D A` on its pattern are a linear function of
:math:`\sigma^{-2}`: :math:`(A^\top D A)_{ij} = \sum_k A_{ki} A_{kj} \sigma_k^{-2}`.  The
triples :math:`(e, k, A_{ki}A_{kj})` are computed once from :math:`A`; the values are
then one gather and one segment sum, which run (and differentiate) on every backend.

References
----------
.. [1] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields: Theory and
   Applications*. Chapman & Hall/CRC, sections 2.3 (conditional distributions) and 4.
.. [2] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. J. R. Stat.
   Soc. B 71, 319-392 (the Gaussian-likelihood case is exact).
.. [3] Harville, D. A. (1997). *Matrix Algebra From a Statistician's Perspective*.
   Springer, 18.1-18.2 (determinant lemma, Woodbury identity).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytensor.tensor as pt
from pymc.distributions.dist_math import check_parameters
from pymc.distributions.distribution import Continuous, _support_point
from pymc.distributions.shape_utils import rv_size_is_none
from pymc.logprob.abstract import _logprob
from pytensor.tensor.random.op import RandomVariable

from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.sampling import sample_gmrf_numeric
from pymc_sparse.linalg.validate import design_csr
from pymc_sparse.ops import logdet, solve
from pymc_sparse.ops._index import const_index
from pymc_sparse.ops.matrix import SparseMatrix, as_sparse_matrix

__all__ = [
    "MarginalGMRFNormal",
    "MarginalGMRFNormalRV",
    "ObservationMatrix",
    "conditional_precision",
    "marginal_gmrf_normal_logp",
]

_LOG_2PI = float(np.log(2.0 * np.pi))


class ObservationMatrix:
    r"""Hashable constant sparse design :math:`A` (``m x n``) and its index maps.

    Parameters
    ----------
    A : scipy.sparse matrix, ndarray or None
        The design.  ``None`` means the identity of order ``n``.
    n : int
        Order of the latent field (columns of ``A``).

    Attributes
    ----------
    m, n : int
        Shape of ``A``.
    rows, cols, vals : ndarray
        COO triplets of ``A`` (duplicates summed, explicit zeros removed).
    ata_pattern : SparsityPattern
        Lower-triangle pattern of :math:`A^\top A` plus the full diagonal.
    ata_entry, ata_obs, ata_coef : ndarray
        For every product :math:`A_{ki}A_{kj}` (:math:`i \ge j`) contributing to
        :math:`A^\top D A`: the position ``e`` in ``ata_pattern``, the observation
        ``k`` and the coefficient, so that ``values[e] += coef * d[k]``.
    """

    def __init__(self, A, n: int):
        n = int(n)
        A = design_csr(A, n)
        A.eliminate_zeros()
        A.sort_indices()
        self.A = A
        self.m, self.n = (int(s) for s in A.shape)
        coo = A.tocoo()
        self.rows = np.asarray(coo.row, np.int64)
        self.cols = np.asarray(coo.col, np.int64)
        self.vals = np.asarray(coo.data, np.float64)
        for arr in (self.rows, self.cols, self.vals):
            arr.flags.writeable = False
        h = hashlib.blake2b(digest_size=16)
        for arr in (np.array([self.m, self.n]), A.indptr, A.indices, A.data):
            h.update(np.ascontiguousarray(arr).tobytes())
        self._hash = h.digest()
        self._build_ata_maps()

    def _build_ata_maps(self):
        # All pairs (i, j), i >= j, of nonzeros within one row k of A.  Rows are grouped
        # by their number of nonzeros so that each group is one broadcast.
        A = self.A
        counts = np.diff(A.indptr)
        obs, coefs, ri, ci = [], [], [], []
        for c in np.unique(counts[counts > 0]):
            krows = np.flatnonzero(counts == c)
            start = A.indptr[krows][:, None] + np.arange(c)[None, :]  # (r, c)
            idx = A.indices[start]
            val = A.data[start]
            a, b = np.tril_indices(c)
            ii = idx[:, a]
            jj = idx[:, b]
            ri.append(np.maximum(ii, jj).ravel())
            ci.append(np.minimum(ii, jj).ravel())
            coefs.append((val[:, a] * val[:, b]).ravel())
            obs.append(np.repeat(krows, a.size))
        if ri:
            r = np.concatenate(ri)
            cc = np.concatenate(ci)
            self.ata_coef = np.concatenate(coefs)
            self.ata_obs = np.concatenate(obs).astype(np.int64)
        else:  # an A with no nonzeros: A'DA = 0
            r = cc = self.ata_obs = np.zeros(0, np.int64)
            self.ata_coef = np.zeros(0)
        self.ata_pattern = SparsityPattern.from_coo(self.n, r, cc)
        self.ata_entry = self.ata_pattern.index_of(r, cc)

    # -- products (symbolic, gathers and scatters: every backend) ------------------
    def matvec(self, x):
        """Symbolic ``A @ x`` for a vector ``x`` of length ``n``."""
        out = pt.zeros(self.m, dtype="float64")
        return pt.inc_subtensor(
            out[const_index(self.rows)], pt.constant(self.vals) * x[const_index(self.cols)]
        )

    def rmatvec(self, v):
        """Symbolic ``A' @ v`` for a vector ``v`` of length ``m``."""
        out = pt.zeros(self.n, dtype="float64")
        return pt.inc_subtensor(
            out[const_index(self.cols)], pt.constant(self.vals) * v[const_index(self.rows)]
        )

    def ata_values(self, d):
        r"""Symbolic values of :math:`A^\top \operatorname{diag}(d) A` on ``ata_pattern``."""
        out = pt.zeros(self.ata_pattern.nnz, dtype="float64")
        return pt.inc_subtensor(
            out[const_index(self.ata_entry)],
            pt.constant(self.ata_coef) * d[const_index(self.ata_obs)],
        )

    def ata_values_numeric(self, d) -> np.ndarray:
        """NumPy counterpart of :meth:`ata_values`."""
        d = np.asarray(d, np.float64)
        return np.bincount(
            self.ata_entry, weights=self.ata_coef * d[self.ata_obs], minlength=self.ata_pattern.nnz
        )

    # -- identity -------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        return isinstance(other, ObservationMatrix) and self._hash == other._hash

    def __hash__(self) -> int:
        return hash(self._hash)

    def __repr__(self) -> str:
        return f"ObservationMatrix(m={self.m}, n={self.n}, nnz={self.vals.size})"


def as_observation_matrix(A, n: int) -> ObservationMatrix:
    """Convert ``None``, a scipy/NumPy matrix or an ObservationMatrix to the latter."""
    if isinstance(A, ObservationMatrix):
        if A.n != n:
            raise ValueError(f"`A` has {A.n} columns but the latent field has n = {n} nodes.")
        return A
    return ObservationMatrix(A, n)


def conditional_precision(Q, design: ObservationMatrix, d):
    r"""Symbolic :math:`Q_{\mathrm{post}} = Q + A^\top \operatorname{diag}(d) A` as a SparseMatrix.

    The pattern is the union of the patterns of ``Q`` and :math:`A^\top A`.
    """
    Q = as_sparse_matrix(Q)
    return Q + SparseMatrix(design.ata_pattern, design.ata_values(d))


def marginal_gmrf_normal_logp(y, Q, mu, design: ObservationMatrix, sigma, logdet_q=None):
    r"""Symbolic :math:`\log p(y \mid \theta)` with the latent GMRF integrated out.

    Parameters
    ----------
    y : TensorVariable
        Observations, length ``m``.
    Q : SparseMatrix
        Prior precision of the latent field (symbolic values, static pattern).
    mu : TensorVariable
        Prior mean, length ``n``.
    design : ObservationMatrix
        The constant design ``A``.
    sigma : TensorVariable
        Noise standard deviations, length ``m``.
    logdet_q : TensorVariable, optional
        :math:`\log\det Q` computed another way (e.g. the :math:`O(1)` table of
        :mod:`pymc_sparse.logdet1d.table` for a CAR precision); by default one factorisation
        of ``Q`` per evaluation.

    Returns
    -------
    TensorVariable
        Scalar; ``-inf`` where ``Q`` or :math:`Q_{\mathrm{post}}` is not positive
        definite (the factor cache returns NaN there).

    Notes
    -----
    See the module docstring for the formula.  The first term needs the factor of
    ``Q``, the other two that of :math:`Q_{\mathrm{post}}`; the gradient reuses both.
    """
    Q = as_sparse_matrix(Q)
    d = 1.0 / pt.sqr(sigma)
    r = y - design.matvec(mu)
    dr = d * r
    c = design.rmatvec(dr)
    Qp = conditional_precision(Q, design, d)
    b = solve(Qp, c)
    # r'Dr - c'b is the difference of two numbers of order 1/sigma^2 and loses every digit
    # as sigma -> 0 (at sigma ~ 1e-8 its rounding error is O(|r|^2): samplers exploring
    # that tail then see a spurious density). The same minimum of the penalised least
    # squares, (r - Ab)'D(r - Ab) + b'Qb, is a sum of two non-negative terms.
    e = r - design.matvec(b)
    quad = pt.sum(d * e * e) + Q.quad_form(b)
    ld_q = logdet(Q) if logdet_q is None else logdet_q
    logp = (
        0.5 * ld_q
        - 0.5 * logdet(Qp)
        - pt.sum(pt.log(sigma))
        - 0.5 * design.m * _LOG_2PI
        - 0.5 * quad
    )
    # Not-SPD: the Ops return NaN; a sampler should see an impossible point, not a NaN.
    return pt.switch(pt.isnan(logp), -np.inf, logp)


class MarginalGMRFNormalRV(RandomVariable):
    r"""Random variable :math:`x \sim N(\mu, Q^{-1})`, :math:`e \sim N(0, \sigma^2)`.

    Inputs are the stored values of ``Q`` (length ``nnz``), ``mu`` (length ``n``) and
    ``sigma`` (length ``m``); the pattern of ``Q`` and the design ``A`` are Op props.
    Draws sample :math:`x` exactly from its GMRF prior with the cached sparse factor
    (Rue 2001) and add the noise.
    """

    name = "marginal_gmrf_normal"
    signature = "(k),(n),(m),()->(m)"
    dtype = "floatX"
    _print_name = ("MarginalGMRFNormal", "\\operatorname{MarginalGMRFNormal}")
    __props__ = (*RandomVariable.__props__, "pattern", "design", "given_logdet")

    def __init__(
        self,
        pattern: SparsityPattern,
        design: ObservationMatrix,
        given_logdet: bool = False,
        **kwargs,
    ):
        self.pattern = pattern
        self.design = design
        # Whether the 4th input is log det Q (else a placeholder and logp factorises Q).
        self.given_logdet = bool(given_logdet)
        super().__init__(**kwargs)

    def rng_fn(self, rng, data, mu, sigma, logdet_q, size):
        """Draw ``y = A x + sigma * z`` with ``x`` an exact GMRF draw (NaN if not SPD)."""
        if np.ndim(data) != 1 or np.ndim(mu) != 1 or np.ndim(sigma) != 1:
            raise NotImplementedError(
                "MarginalGMRFNormal does not support batched parameters; build one variable "
                "per batch member."
            )
        size = () if size is None else tuple(size)
        x = sample_gmrf_numeric(self.pattern, data, size=size, rng=rng, mu=mu)  # (*size, n)
        y = (self.design.A @ x.reshape(-1, self.design.n).T).T.reshape((*size, self.design.m))
        return y + sigma * rng.standard_normal((*size, self.design.m))


class MarginalGMRFNormal(Continuous):
    r"""Gaussian observations of a latent sparse GMRF, the latent field integrated out.

    .. math::

        x \sim N(\mu, Q^{-1}), \quad y \mid x \sim N(A x, \operatorname{diag}(\sigma^2))
        \quad\Longrightarrow\quad
        y \sim N\!\left(A\mu,\ \operatorname{diag}(\sigma^2) + A Q^{-1} A^\top\right),

    evaluated with sparse Cholesky factors of :math:`Q` and :math:`Q + A^\top
    \operatorname{diag}(\sigma^{-2}) A` only (see :mod:`pymc_sparse.distributions.marginal`
    for the formula).  Use it as the likelihood of ``observed`` data; recover the latent
    field afterwards with :func:`pymc_sparse.inference.latent.sample_latent`.

    ========  =================================================================
    Support   :math:`y \in \mathbb{R}^m`
    Mean      :math:`A\mu`
    Variance  :math:`\operatorname{diag}(\sigma^2) + A Q^{-1} A^\top` (never formed)
    ========  =================================================================

    Parameters
    ----------
    Q : SparseMatrix, scipy.sparse matrix or ndarray
        Symmetric positive-definite precision of the latent field (``n x n``), usually a
        :class:`~pymc_sparse.ops.matrix.SparseMatrix` whose values depend on random variables.
    mu : tensor_like, default 0
        Prior mean of the latent field: a scalar or a length-``n`` vector.
    A : scipy.sparse matrix, ndarray or None
        Constant ``m x n`` design: ``None`` for the identity, the rows of the identity at
        the observed sites for missing data, or any sparse design.
    sigma : tensor_like, default 1
        Noise standard deviation: a scalar or a length-``m`` vector (heteroscedastic).
    logdet_Q : tensor_like, optional
        :math:`\log\det Q` as a scalar graph computed without a factorisation, to save
        one factorisation (and one selected inverse for the gradient) per evaluation.  For
        :math:`Q = \tau(D - \alpha W)` use
        ``n * pt.log(tau) + pms.logdet1d.car_logdet_family(W, (0, 1 - 1e-4))(alpha)``
        (certified to 1e-9, see :mod:`pymc_sparse.logdet1d.table`).  It must equal
        :math:`\log\det Q` for every parameter value: nothing checks it at run time
        (``tests/test_marginal.py`` shows how to check yours at a few points).  Default:
        one factorisation of ``Q`` per evaluation.

    Examples
    --------
    A proper CAR field on a lattice with 10 % of the sites unobserved::

        import pymc as pm, scipy.sparse as sp, pymc_sparse as pms
        from pymc_sparse.distributions.marginal import MarginalGMRFNormal

        obs = np.flatnonzero(~np.isnan(y_full))
        A = sp.identity(n, format="csr")[obs]
        D = sp.diags(W.sum(1).A1)
        with pm.Model():
            tau = pm.Gamma("tau", 2, 1)
            alpha = pm.Uniform("alpha", 0, 1)
            sigma = pm.HalfNormal("sigma", 1)
            Q = tau * (pms.SparseMatrix.from_scipy(D) - alpha * pms.SparseMatrix.from_scipy(W))
            MarginalGMRFNormal("y", Q=Q, mu=0.0, A=A, sigma=sigma, observed=y_full[obs])
    """

    rv_type = MarginalGMRFNormalRV

    @classmethod
    def dist(cls, Q, mu=0.0, A=None, sigma=1.0, logdet_Q=None, **kwargs):
        """Build the variable; see the class docstring for the parameters."""
        Q = as_sparse_matrix(Q)
        given = logdet_Q is not None
        if given:
            logdet_Q = pt.as_tensor_variable(logdet_Q)
            if logdet_Q.type.ndim != 0:
                raise ValueError(f"`logdet_Q` must be a scalar, got {logdet_Q.type}.")
            logdet_Q = pt.cast(logdet_Q, "float64")
        else:
            logdet_Q = pt.constant(np.nan, dtype="float64")
        if not Q.pattern.has_full_diagonal:
            raise ValueError(f"`Q` ({Q!r}) must store every diagonal entry.")
        design = as_observation_matrix(A, Q.n)
        mu = _as_length(mu, Q.n, "mu", "the latent field's n")
        sigma = _as_length(sigma, design.m, "sigma", "the number of observations m")
        return super().dist(
            [Q.data, mu, sigma, logdet_Q],
            pattern=Q.pattern,
            design=design,
            given_logdet=given,
            **kwargs,
        )

    @classmethod
    def rv_op(
        cls, data, mu, sigma, logdet_q, *, pattern, design, given_logdet=False, size=None, rng=None
    ):
        """Apply a :class:`MarginalGMRFNormalRV` with these pattern and design."""
        op = MarginalGMRFNormalRV(pattern, design, given_logdet)
        return op(data, mu, sigma, logdet_q, size=size, rng=rng)


def _as_length(v, length: int, name: str, what: str):
    v = pt.as_tensor_variable(v)
    if v.type.dtype != "float64":
        v = pt.cast(v, "float64")
    if v.type.ndim == 0:
        return pt.alloc(v, length)
    if v.type.ndim != 1:
        raise ValueError(f"`{name}` must be a scalar or a vector of length {length}, got {v.type}.")
    if v.type.shape[0] is not None and v.type.shape[0] not in (1, length):
        raise ValueError(
            f"`{name}` has length {v.type.shape[0]} but must be a scalar or have length "
            f"{length} ({what})."
        )
    if v.type.shape[0] == 1:
        return pt.alloc(v[0], length)
    return pt.specify_shape(v, (length,))


@_logprob.register(MarginalGMRFNormalRV)
def _marginal_gmrf_normal_logprob(op, values, rng, size, data, mu, sigma, logdet_q, **kwargs):
    (value,) = values
    if value.type.ndim != 1:
        raise NotImplementedError(
            "MarginalGMRFNormal supports a single vector of observations (no batch dimensions)."
        )
    logp = marginal_gmrf_normal_logp(
        value,
        SparseMatrix(op.pattern, data),
        mu,
        op.design,
        sigma,
        logdet_q if op.given_logdet else None,
    )
    return check_parameters(logp, pt.all(sigma > 0), msg="sigma > 0")


@_support_point.register(MarginalGMRFNormalRV)
def _marginal_gmrf_normal_support_point(op, rv, rng, size, data, mu, sigma, logdet_q):
    point = op.design.matvec(mu)
    if not rv_size_is_none(size):
        point = pt.full((*size, op.design.m), point)
    return point
