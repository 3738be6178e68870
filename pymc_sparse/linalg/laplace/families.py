r"""Observation families of the embedded Laplace approximation.

Each family is the log-likelihood :math:`\ell(\eta) = \log p(y \mid \eta, \phi)` of one
observation given its linear predictor :math:`\eta` and, for some families, one
parameter :math:`\phi` of its own (the negative-binomial dispersion, the normal noise
sd).  The inner Newton solver needs :math:`\ell', \ell''`; the gradient of the Laplace
marginal by the implicit function theorem needs :math:`\ell'''` (the mode's movement
changes :math:`W = -\ell''`) and :math:`\partial_\phi \ell, \partial_\phi \ell',
\partial_\phi \ell''`.  All are elementwise and vectorised over the ``m`` observations.

Every family here is log-concave in :math:`\eta` (:math:`W \ge 0`), so
:math:`H = Q + A^\top W A` is positive definite whenever :math:`Q` is.

References
----------
.. [1] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. J. R. Stat.
   Soc. B 71, 319-392.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, expit, gammaln

__all__ = ["FAMILIES", "LaplaceFamily", "get_family"]

_LOG_2PI = float(np.log(2.0 * np.pi))


class LaplaceFamily:
    r"""Base class: ``derivs`` and ``param_derivs`` of :math:`\log p(y \mid \eta, \phi)`.

    Attributes
    ----------
    name : str
    param : str or None
        Name of the family's own parameter (``"dispersion"``, ``"sigma"``) or None.
    uses_trials : bool
        Whether ``n_trials`` enters (binomial).
    """

    name = ""
    param: str | None = None
    uses_trials = False
    log_link = False  # exposure enters as log(exposure) added to the offset

    def derivs(self, y, eta, n, phi):
        """Return ``(l, l1, l2, l3)``: log-likelihood per observation and 3 eta-derivatives."""
        raise NotImplementedError

    def param_derivs(self, y, eta, n, phi):
        """Return ``(dl, dl1, dl2)``: derivatives of ``l, l1, l2`` with respect to ``phi``."""
        z = np.zeros_like(eta)
        return z, z, z

    def check(self, y, n, phi) -> None:
        """Raise ``ValueError`` for observations outside the support."""

    def __repr__(self) -> str:
        return f"LaplaceFamily({self.name!r})"


def _require(cond, msg):
    if not np.all(cond):
        raise ValueError(msg)


class Poisson(LaplaceFamily):
    r""":math:`y \sim \mathrm{Poisson}(e^\eta)`: :math:`\ell = y\eta - e^\eta - \log y!`."""

    name = "poisson"
    log_link = True

    def derivs(self, y, eta, n, phi):
        r"""Return ``(l, l1, l2, l3)``; :math:`\ell'' = \ell''' = -e^\eta`."""
        mu = np.exp(eta)
        return y * eta - mu - gammaln(y + 1.0), y - mu, -mu, -mu

    def check(self, y, n, phi):
        """Require non-negative integer counts."""
        _require((y >= 0) & (y == np.round(y)), "Poisson observations must be counts >= 0.")


class Binomial(LaplaceFamily):
    r""":math:`y \sim \mathrm{Binomial}(N, \operatorname{logit}^{-1}\eta)`.

    :math:`\ell = y\eta - N\log(1 + e^\eta) + \log\binom{N}{y}`, :math:`p = \sigma(\eta)`:
    :math:`\ell' = y - Np`, :math:`\ell'' = -Np(1-p)`, :math:`\ell''' = -Np(1-p)(1-2p)`.
    """

    name = "binomial"
    uses_trials = True

    def derivs(self, y, eta, n, phi):
        """Return ``(l, l1, l2, l3)``."""
        p = expit(eta)
        v = n * p * (1.0 - p)
        const = gammaln(n + 1.0) - gammaln(y + 1.0) - gammaln(n - y + 1.0)
        return y * eta - n * np.logaddexp(0.0, eta) + const, y - n * p, -v, -v * (1.0 - 2.0 * p)

    def check(self, y, n, phi):
        """Require integer ``0 <= y <= n_trials``."""
        _require(
            (y >= 0) & (y <= n) & (y == np.round(y)) & (n == np.round(n)),
            "Binomial observations must be integers with 0 <= y <= n_trials.",
        )


class Bernoulli(Binomial):
    """Binomial with one trial."""

    name = "bernoulli"
    uses_trials = False

    def derivs(self, y, eta, n, phi):
        """Return ``(l, l1, l2, l3)`` of the binomial with ``N = 1``."""
        return super().derivs(y, eta, np.ones_like(eta), phi)

    def check(self, y, n, phi):
        """Require ``y`` in {0, 1}."""
        _require((y == 0) | (y == 1), "Bernoulli observations must be 0 or 1.")


class NegativeBinomial(LaplaceFamily):
    r"""Negative binomial with mean :math:`\mu = e^\eta` and dispersion :math:`\alpha`.

    Variance :math:`\mu + \mu^2/\alpha` (PyMC's ``NegativeBinomial(mu, alpha)``):

    .. math::

        \ell = \log\Gamma(y+\alpha) - \log\Gamma(\alpha) - \log y! + \alpha\log\alpha
               + y\eta - (\alpha + y)\log(\alpha + e^\eta).

    With :math:`p = \mu/(\alpha + \mu)`: :math:`\ell' = y - (\alpha+y)p`,
    :math:`\ell'' = -(\alpha+y)p(1-p)`, :math:`\ell''' = \ell''(1-2p)`, and, using
    :math:`\partial_\alpha p = -p(1-p)/\alpha`,
    :math:`\partial_\alpha\ell' = -p + (\alpha+y)p(1-p)/\alpha`,
    :math:`\partial_\alpha\ell'' = -p(1-p) + (\alpha+y)(1-2p)p(1-p)/\alpha`.
    """

    name = "negative_binomial"
    param = "dispersion"
    log_link = True

    def derivs(self, y, eta, n, phi):
        """Return ``(l, l1, l2, l3)``."""
        a = phi
        la = np.log(a)
        p = expit(eta - la)
        v = (a + y) * p * (1.0 - p)
        l0 = (
            gammaln(y + a)
            - gammaln(a)
            - gammaln(y + 1.0)
            + a * la
            + y * eta
            - (a + y) * np.logaddexp(la, eta)
        )
        return l0, y - (a + y) * p, -v, -v * (1.0 - 2.0 * p)

    def param_derivs(self, y, eta, n, phi):
        """Return derivatives of ``l, l1, l2`` with respect to the dispersion."""
        a = phi
        la = np.log(a)
        p = expit(eta - la)
        pq = p * (1.0 - p)
        dl = digamma(y + a) - digamma(a) + la + 1.0 - np.logaddexp(la, eta) - (a + y) / a * (1 - p)
        dl1 = -p + (a + y) * pq / a
        dl2 = -pq + (a + y) * (1.0 - 2.0 * p) * pq / a
        return dl, dl1, dl2

    def check(self, y, n, phi):
        """Require counts and a positive dispersion."""
        _require((y >= 0) & (y == np.round(y)), "Negative-binomial observations must be counts.")


class Normal(LaplaceFamily):
    r""":math:`y \sim N(\eta, \sigma^2)`: the Laplace approximation is exact.

    :math:`\ell' = (y-\eta)/\sigma^2`, :math:`\ell'' = -1/\sigma^2`, :math:`\ell''' = 0`;
    :math:`\partial_\sigma\ell = -1/\sigma + (y-\eta)^2/\sigma^3`,
    :math:`\partial_\sigma\ell' = -2(y-\eta)/\sigma^3`, :math:`\partial_\sigma\ell'' = 2/\sigma^3`.
    """

    name = "normal"
    param = "sigma"

    def derivs(self, y, eta, n, phi):
        """Return ``(l, l1, l2, l3)``."""
        r = y - eta
        s2 = phi * phi
        l0 = -0.5 * _LOG_2PI - np.log(phi) - 0.5 * r * r / s2
        return l0, r / s2, -1.0 / s2 + 0.0 * r, 0.0 * r

    def param_derivs(self, y, eta, n, phi):
        """Return derivatives of ``l, l1, l2`` with respect to sigma."""
        r = y - eta
        s3 = phi**3
        return -1.0 / phi + r * r / s3, -2.0 * r / s3, 2.0 / s3 + 0.0 * r


FAMILIES: dict[str, LaplaceFamily] = {
    f.name: f for f in (Poisson(), Binomial(), Bernoulli(), NegativeBinomial(), Normal())
}


def get_family(family) -> LaplaceFamily:
    """Return the family object of a name (or the object itself)."""
    if isinstance(family, LaplaceFamily):
        return family
    try:
        return FAMILIES[str(family)]
    except KeyError:
        raise ValueError(f"Unknown family {family!r}; choose one of {sorted(FAMILIES)}.") from None
