r"""SPDE precisions of Matérn fields on a mesh, their log-determinants and parameters.

The Matérn field :math:`x` on :math:`\mathbb R^d` (here :math:`d = 2`) solves
:math:`(\kappa^2 - \Delta)^{\alpha/2} (\tau x) = \mathcal W` (white noise), with smoothness
:math:`\nu = \alpha - d/2`.  Its finite-element approximation on P1 functions, with lumped
mass :math:`C` and stiffness :math:`G` (:mod:`pymc_sparse.spde.fem`) and
:math:`K(\kappa) = \kappa^2 C + G`, has the sparse precisions [1]_

.. math::

   \alpha = 1:\quad Q = \tau^2 K, \qquad
   \alpha = 2:\quad Q = \tau^2 K C^{-1} K
                 = \tau^2(\kappa^4 C + 2\kappa^2 G + G C^{-1} G).

Log-determinant
---------------
With :math:`s = \kappa^2` both depend on :math:`\kappa` only through
:math:`f(s) = \log\det(G + sC)`, a one-parameter pencil :math:`A_0 + sA_1` with
:math:`A_0 = G`, :math:`A_1 = C`:

.. math::

   \log\det Q = 2n\log\tau + f(s) \quad (\alpha=1), \qquad
   \log\det Q = 2n\log\tau + 2f(s) - \textstyle\sum_i \log c_i \quad (\alpha=2),

since :math:`\det(K C^{-1} K) = \det(K)^2/\det(C)`.  :math:`G` is singular (constants,
one per connected piece of the mesh), so :math:`f(s) \sim k\log s` as :math:`s \to 0`:
the table of :func:`pymc_sparse.logdet1d.table.logdet_family` removes that term exactly
and grades its pieces geometrically toward :math:`s = 0`, so an evaluation costs
:math:`O(1)` after the set-up; the exact path is one factorisation of :math:`K`
(:math:`f'(s) = \operatorname{tr}(K^{-1}C)` from its selected inverse).

Parameters
----------
Practical range :math:`\rho = \sqrt{8\nu}/\kappa` (correlation about 0.14 at distance
:math:`\rho`) and marginal standard deviation

.. math:: \sigma^2 = \frac{\Gamma(\nu)}{\Gamma(\alpha)(4\pi)^{d/2}\kappa^{2\nu}\tau^2},

i.e. :math:`\sigma^2 = 1/(4\pi\kappa^2\tau^2)` for :math:`\alpha = 2`.  For
:math:`\alpha = 1` in 2-D (:math:`\nu = 0`) the continuous field has no finite variance;
as R-INLA does, the mapping then uses the nominal :math:`\nu = 1/2`, and :math:`\sigma`
is nominal (the mesh field's variance grows like :math:`\log(1/h)`).

PC prior (Fuglstad et al. 2019, [2]_) for :math:`(\rho, \sigma)` with
:math:`P(\rho < \rho_0) = p_\rho` and :math:`P(\sigma > \sigma_0) = p_\sigma`:

.. math::

   \pi(\rho,\sigma) = \tfrac d2\tilde\lambda_1\rho^{-1-d/2}e^{-\tilde\lambda_1\rho^{-d/2}}
                      \cdot \tilde\lambda_2 e^{-\tilde\lambda_2\sigma}, \quad
   \tilde\lambda_1 = -\log(p_\rho)\rho_0^{d/2},\ \tilde\lambda_2 = -\log(p_\sigma)/\sigma_0;

in 2-D, :math:`1/\rho \sim \mathrm{Exponential}(\tilde\lambda_1)` and
:math:`\sigma \sim \mathrm{Exponential}(\tilde\lambda_2)` independently.

References
----------
.. [1] Lindgren, F., Rue, H. and Lindström, J. (2011). An explicit link between Gaussian
   fields and Gaussian Markov random fields: the SPDE approach. *J. R. Stat. Soc. B*
   73(4), 423-498.
.. [2] Fuglstad, G.-A., Simpson, D., Lindgren, F. and Rue, H. (2019). Constructing priors
   that penalize the complexity of Gaussian random fields. *J. Am. Stat. Assoc.*
   114(525), 445-452.
.. [3] Lindgren, F. and Rue, H. (2015). Bayesian spatial modelling with R-INLA. *J. Stat.
   Softw.* 63(19) (the nominal smoothness of alpha = 1).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.lru import LRUCache
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.logdet1d.table import LogDetFamily, Singularity, logdet_family
from pymc_sparse.spde.fem import FEMatrices, fem_matrices

__all__ = [
    "SPDEPrecision",
    "kappa_tau",
    "matern_correlation",
    "matern_nu",
    "pc_prior_rates",
    "range_sigma",
]

_DIM = 2
# Tables cost seconds (n = 1e4) to minutes (1e5): keep the 8 most recent meshes.
_FAMILIES = LRUCache(8, "SPDE logdet tables")


def matern_nu(alpha: int) -> float:
    """Smoothness used for range and variance: ``alpha - 1`` in 2-D, nominal 1/2 for alpha 1."""
    if alpha not in (1, 2):
        raise ValueError(f"`alpha` must be 1 or 2, got {alpha!r}.")
    return max(0.5, alpha - _DIM / 2)


def _variance_constant(alpha: int) -> float:
    """``sigma * tau * kappa**nu`` (a constant): sqrt(Gamma(nu) / (Gamma(alpha) (4 pi)^(d/2)))."""
    nu = matern_nu(alpha)
    return math.sqrt(math.gamma(nu) / (math.gamma(alpha) * (4 * math.pi) ** (_DIM / 2)))


def kappa_tau(range_, sigma, alpha: int = 2):
    r""":math:`(\kappa, \tau)` from practical range and marginal sd (NumPy or PyTensor).

    :math:`\kappa = \sqrt{8\nu}/\rho`, :math:`\tau = c_\alpha / (\sigma\kappa^\nu)` with
    :math:`c_\alpha^2 = \Gamma(\nu)/(\Gamma(\alpha)(4\pi)^{d/2})`.
    """
    nu = matern_nu(alpha)
    kappa = math.sqrt(8 * nu) / range_
    tau = _variance_constant(alpha) / (sigma * kappa**nu)
    return kappa, tau


def range_sigma(kappa, tau, alpha: int = 2):
    r"""Practical range and marginal sd from :math:`(\kappa, \tau)`; inverse of kappa_tau."""
    nu = matern_nu(alpha)
    return math.sqrt(8 * nu) / kappa, _variance_constant(alpha) / (tau * kappa**nu)


def matern_correlation(r, range_, nu: float = 1.0) -> np.ndarray:
    r"""Matérn correlation :math:`\frac{2^{1-\nu}}{\Gamma(\nu)}(\kappa r)^\nu K_\nu(\kappa r)`.

    With :math:`\kappa = \sqrt{8\nu}/\rho` (``range_`` is the practical range).
    """
    from scipy.special import gamma, kv

    r = np.asarray(r, dtype=np.float64)
    u = math.sqrt(8 * nu) / range_ * r
    with np.errstate(invalid="ignore", over="ignore"):
        c = 2 ** (1 - nu) / gamma(nu) * u**nu * kv(nu, u)
    return np.where(u == 0, 1.0, c)


def pc_prior_rates(range0, p_range, sigma0, p_sigma) -> tuple[float, float]:
    r"""Rates :math:`(\tilde\lambda_1, \tilde\lambda_2)` of the PC prior in 2-D.

    :math:`P(\rho < \rho_0) = p_\rho`, :math:`P(\sigma > \sigma_0) = p_\sigma`; then
    :math:`1/\rho \sim \mathrm{Exp}(\tilde\lambda_1)`, :math:`\sigma \sim
    \mathrm{Exp}(\tilde\lambda_2)` (Fuglstad et al. 2019, theorem 2.6).
    """
    for v, name in ((range0, "range0"), (sigma0, "sigma0")):
        if not v > 0:
            raise ValueError(f"`{name}` must be positive, got {v!r}.")
    for p, name in ((p_range, "p_range"), (p_sigma, "p_sigma")):
        if not 0 < p < 1:
            raise ValueError(f"`{name}` must lie in (0, 1), got {p!r}.")
    return -math.log(p_range) * range0 ** (_DIM / 2), -math.log(p_sigma) / sigma0


class SPDEPrecision:
    r"""The numeric SPDE structure of one mesh and one :math:`\alpha`.

    Parameters
    ----------
    mesh : TriangleMesh or FEMatrices
        The mesh (its FE matrices are assembled) or the matrices themselves.
    alpha : {1, 2}
        :math:`\alpha = 2` is Matérn :math:`\nu = 1` in 2-D.

    Attributes
    ----------
    pattern : SparsityPattern
        Lower-triangle pattern of :math:`Q` (of :math:`G`, plus :math:`GC^{-1}G` for
        :math:`\alpha = 2`).
    c_data, g_data, h_data : ndarray
        Values of :math:`C`, :math:`G` and :math:`GC^{-1}G` (zero for :math:`\alpha = 1`)
        on ``pattern``, so that ``values(kappa, tau)`` is
        :math:`\tau^2(\kappa^4 c + 2\kappa^2 g + h)` (:math:`\alpha=2`) or
        :math:`\tau^2(\kappa^2 c + g)` (:math:`\alpha = 1`).
    k_pattern, k_c, k_g : SparsityPattern, ndarray, ndarray
        The pencil :math:`K = \kappa^2 C + G` on its own pattern.
    logdet_c : float
        :math:`\sum_i \log c_i`.
    components : int
        Connected pieces of the mesh (the multiplicity of :math:`s = 0`).
    """

    def __init__(self, mesh, alpha: int = 2):
        matern_nu(alpha)
        fem = mesh if isinstance(mesh, FEMatrices) else fem_matrices(mesh)
        self.fem = fem
        self.alpha = int(alpha)
        self.n = fem.n
        c, G = fem.c, fem.G
        if np.any(c <= 0):
            raise ValueError("The lumped mass has non-positive entries; check the mesh.")
        self.logdet_c = math.fsum(np.log(c))
        self.components = int(connected_components(G, directed=False)[0])
        C = sp.diags(c, format="csc")
        self.k_pattern, _ = SparsityPattern.from_scipy(G + C)
        self.k_c = _values(self.k_pattern, C)
        self.k_g = _values(self.k_pattern, G)
        if self.alpha == 1:
            self.pattern = self.k_pattern
            self.c_data, self.g_data = self.k_c, self.k_g
            self.h_data = np.zeros_like(self.k_c)
        else:
            H = (G @ sp.diags(1.0 / c) @ G).tocsc()
            H = (0.5 * (H + H.T)).tocsc()
            self.pattern, _ = SparsityPattern.from_scipy(abs(H) + abs(G) + C)
            self.c_data = _values(self.pattern, C)
            self.g_data = _values(self.pattern, G)
            self.h_data = _values(self.pattern, H)
        h = hashlib.blake2b(digest_size=16)
        for a in (self.k_pattern.key, self.k_c, self.k_g):
            h.update(a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes())
        self._key = h.digest()

    def __repr__(self) -> str:
        return f"SPDEPrecision(n={self.n}, alpha={self.alpha}, nnz={self.pattern.nnz})"

    # Identity (an Op prop): the mesh's FE matrices and alpha.
    def __eq__(self, other) -> bool:
        return (
            isinstance(other, SPDEPrecision)
            and self._key == other._key
            and self.alpha == other.alpha
        )

    def __hash__(self) -> int:
        return hash((self._key, self.alpha))

    # -- numeric ---------------------------------------------------------------------
    def values(self, kappa: float, tau: float) -> np.ndarray:
        r"""Return the stored (lower-triangle) values of :math:`Q(\kappa, \tau)`."""
        s = kappa * kappa
        if self.alpha == 1:
            return tau * tau * (s * self.c_data + self.g_data)
        return tau * tau * (s * s * self.c_data + 2 * s * self.g_data + self.h_data)

    def matrix(self, kappa: float, tau: float) -> sp.csc_matrix:
        r"""Return :math:`Q(\kappa, \tau)` as a symmetric scipy matrix."""
        return self.pattern.to_scipy(self.values(kappa, tau))

    def logdet_k(self, s: float) -> float:
        r"""Exact :math:`\log\det(G + sC)` from one factorisation (NaN if not SPD)."""
        F = CACHE.factor(self.k_pattern, self.k_g + s * self.k_c)
        return float(F.logdet()) if F.ok else float("nan")

    def logdet(self, kappa: float, tau: float) -> float:
        r"""Exact :math:`\log\det Q(\kappa, \tau)` via the pencil (see the module docstring)."""
        f = self.logdet_k(kappa * kappa)
        base = 2 * self.n * math.log(tau)
        return base + f if self.alpha == 1 else base + 2 * f - self.logdet_c

    def s_interval(self, range_bounds) -> tuple[float, float]:
        r"""Interval of :math:`s = \kappa^2` covering practical ranges in ``range_bounds``."""
        lo, hi = (float(r) for r in range_bounds)
        if not 0 < lo < hi:
            raise ValueError(
                f"`range_bounds` must be (lo, hi) with 0 < lo < hi, got {range_bounds}."
            )
        nu = matern_nu(self.alpha)
        return 8 * nu / hi**2, 8 * nu / lo**2

    def default_range_bounds(self) -> tuple[float, float]:
        """Ranges from twice the median edge length to ten times the mesh diameter.

        Computed from the FE matrices: the typical edge is ``sqrt(2 * median c)`` (a node
        carries a third of ~6 triangles of area ``h^2 sqrt(3)/4``), the diameter from the
        total area.
        """
        h = math.sqrt(2.0 * float(np.median(self.fem.c)) / (math.sqrt(3) / 2))
        diam = 2.0 * math.sqrt(float(self.fem.c.sum()) / math.pi)
        return 2.0 * h, 10.0 * diam

    def logdet_family(self, range_bounds=None, **kwargs) -> LogDetFamily:
        r"""Return the certified table of :math:`f(s) = \log\det(G + sC)` (built once, cached).

        Parameters
        ----------
        range_bounds : (float, float), optional
            Practical ranges to tabulate (default :meth:`default_range_bounds`); outside
            them the Op evaluates exactly.
        **kwargs
            Passed to :func:`~pymc_sparse.logdet1d.table.logdet_family`.
        """
        if range_bounds is None:
            range_bounds = self.default_range_bounds()
        lo, hi = self.s_interval(range_bounds)
        opts = {"rtol_df": 1e-10, "max_pieces": 400, **kwargs}
        key = (self._key, lo, hi, tuple(sorted(opts.items())))

        def make():
            return logdet_family(
                self.fem.G,
                self.fem.C,
                (lo, hi),
                singularities=[Singularity(0.0, self.components)],
                max_width=hi - lo,
                **opts,
            )

        return _FAMILIES.get_or_create(key, make)


def _values(pattern: SparsityPattern, A) -> np.ndarray:
    """Values of the symmetric matrix ``A`` on the lower-triangle ``pattern`` (0 elsewhere)."""
    A = sp.csc_matrix(A)
    return np.asarray(A[pattern.rows, pattern.cols]).ravel()
