r"""Chebyshev-Lobatto interpolation on one piece, the numerics under the log-determinant tables.

Values at the points :math:`t_j = \cos(\pi j/(m-1))` give Chebyshev coefficients by a
type-I DCT; derivatives and antiderivatives act on the coefficients; one point is
evaluated by Clenshaw's recurrence.  Plain NumPy/SciPy: no factorisations, no PyTensor.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.fft

GRADING = 4.0  # ratio of successive piece distances to a singular end


def _lobatto(m: int) -> np.ndarray:
    r"""Chebyshev-Lobatto points :math:`\cos(\pi j/(m-1))`, from 1 down to -1."""
    return np.cos(np.pi * np.arange(m) / (m - 1))


def _coefficients(values: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients of the interpolant through values at :func:`_lobatto` points."""
    m = values.size
    c = scipy.fft.dct(values, type=1) / (m - 1)
    c[0] /= 2
    c[-1] /= 2
    return c


def _derivative_coefficients(c: np.ndarray, half_width: float, order: int) -> np.ndarray:
    d = c
    for _ in range(order):
        d = np.polynomial.chebyshev.chebder(d) / half_width if d.size > 1 else np.zeros(1)
    return d


def _clenshaw(t: float, c: np.ndarray) -> float:
    # Scalar Clenshaw recurrence; cheaper than numpy's chebval for one point.
    b1 = b2 = 0.0
    t2 = 2.0 * t
    for k in range(c.size - 1, 0, -1):
        b1, b2 = c[k] + t2 * b1 - b2, b1
    return c[0] + t * b1 - b2


def _graded_breaks(lo, hi, singular_points, max_width):
    """Initial partition of [lo, hi], graded geometrically toward nearby singular points."""
    pts = {lo, hi}
    width = hi - lo
    for s in singular_points:
        if s >= hi:
            d = s - hi
            while d * GRADING < width / 2 + (s - hi):
                d *= GRADING
                x = s - d
                if lo < x < hi:
                    pts.add(x)
        elif s <= lo:
            d = lo - s
            while d * GRADING < width / 2 + (lo - s):
                d *= GRADING
                x = s + d
                if lo < x < hi:
                    pts.add(x)
    pts = np.array(sorted(pts))
    out = [pts[0]]
    for a, b in itertools.pairwise(pts):
        k = max(1, math.ceil((b - a) / max_width - 1e-12))
        out.extend(a + (b - a) * np.arange(1, k + 1) / k)
    return np.array(out)


def _chop(c, tol):
    """Shortest prefix of ``c`` whose dropped tail has ``sum |c_j| <= tol``.

    ``|T_j| <= 1`` on [-1, 1], so dropping the tail changes the series by at most that.
    """
    tail = np.cumsum(np.abs(c)[::-1])[::-1]
    bad = np.flatnonzero(tail > tol)
    p = 0 if bad.size == 0 else bad[-1] + 1
    return c[: max(p, 1)]


def _integrate(d, half_width, t, v):
    r"""Series of :math:`g` on a piece from the series ``d`` of :math:`g'` and samples of :math:`g`.

    :math:`dg/dt = h\,g'` on the piece (half-width :math:`h`), so :math:`g = C + h\int d`;
    the constant :math:`C` is the mean misfit to the samples ``v`` at ``t``, which
    averages their rounding noise.
    """
    c = np.polynomial.chebyshev.chebint(d, scl=half_width)
    c[0] += np.mean(v - np.polynomial.chebyshev.chebval(t, c))
    return c
