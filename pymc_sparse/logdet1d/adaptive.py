r"""Adaptive piecewise Chebyshev interpolation of :math:`g'`, built level by level in batches.

Each piece samples :math:`g'` at nested Chebyshev--Lobatto points (9, 17, 33: each level
reuses every point of the one before) and is accepted when the last quarter of the
Chebyshev coefficients bounds the interpolation error below the tolerance
(:math:`|T_j| \le 1`: :math:`\sum_{\text{tail}}|d_j| \le \mathrm{tol}_{f'}/4`).

Which pieces to refine and which to split is decided from the coefficients already in
hand.  For a function analytic in a Bernstein ellipse of parameter :math:`\rho` the
coefficients decay like :math:`\rho^{-j}` (Trefethen 2019, ch. 8): the slope of their
envelope, extrapolated, predicts the degree a piece needs.  A piece predicted to need
more than the finest level can carry is split at once, after its first 9 samples (of
which the two halves reuse 3: the ends and the midpoint), instead of after 33 samples
as a fixed ladder does; that was most of the cost of the previous builder (n = 10^4
lattice: 1,177 factorisations, 264 of them on pieces that were then split).  Away from
singular ends, where the samples' rounding is far below the tolerance, a piece is
accepted on :func:`tail_error` (the last coefficients extrapolated geometrically) rather
than on the sum of the last quarter of them, so a piece needing degree 14 stops at 17
points instead of 33.  Since :math:`g` is the integral of the :math:`g'` series, an
error :math:`e` in :math:`g'` moves :math:`g` by up to :math:`2he` on a piece of
half-width :math:`h`: the tolerance on :math:`g'` includes :math:`\mathrm{tol}_f/(4h)`,
which binds on wide pieces (the SPDE family spans decades of :math:`\kappa^2`; without
it such pieces were chopped too short, failed the check of :math:`g` and were split,
1,243 factorisations against 251 on a 6,285-node mesh).  The prediction only chooses the
order of work: acceptance is always a tail criterion, and the table is certified
afterwards against fresh exact evaluations.

All pieces active at one level are sampled as one batch, so a parallel sampler
(:class:`pymc_sparse.logdet1d.exact.Sampler`) keeps every core busy.

References
----------
.. [1] Trefethen, L. N. (2019). *Approximation Theory and Approximation Practice*,
   extended edition. SIAM, ch. 8 (coefficient decay) and ch. 18 (chopping).
"""

from __future__ import annotations

import math

import numpy as np

from pymc_sparse.logdet1d.chebyshev import _chop, _coefficients, _integrate, _lobatto

LEVELS = (9, 17, 33)  # nested Chebyshev-Lobatto sizes tried before a piece is split


def _tail_size(m: int) -> int:
    return max(2, m // 4)


def _envelope(d: np.ndarray) -> np.ndarray:
    r"""Monotone envelope :math:`E_j = \max_{k \ge j} |d_k|` of Chebyshev coefficients."""
    return np.maximum.accumulate(np.abs(d)[::-1])[::-1]


def tail_error(d: np.ndarray) -> float:
    r"""Estimated sup-norm error of the interpolant with Chebyshev coefficients ``d``.

    The interpolant of degree :math:`m-1` through :math:`m` Lobatto points has error at
    most :math:`2\sum_{j \ge m}|c_j|` over the exact coefficients :math:`c_j` it does
    not resolve (Trefethen 2019, thm 4.2).  Where the envelope :math:`E` of ``d``
    decays geometrically over its upper half, with ratio :math:`r` per degree, they are
    extrapolated as :math:`E_{m-2}\,r^{j-m+2}` with :math:`r` taken no smaller than
    1/2, which bounds the error by :math:`2E_{m-2}\,r^2/(1-r)` (at least
    :math:`E_{m-2}`; :math:`E_{m-2}` covers both parities).  A tail decaying more
    slowly than :math:`r = 0.8` is bounded by the sum of its last quarter instead.
    Checked against the true error for poles, logarithmic and square-root branch
    points and sums of poles at 9, 17 and 33 points (tests/logdet1d/test_setup.py):
    the error was at most 0.73 times the estimate.
    """
    m = d.size
    env = _envelope(d)
    j1 = m // 2
    if env[j1] <= 0:
        return 0.0
    r = (env[m - 1] / env[j1]) ** (1.0 / (m - 1 - j1))
    if r > 0.8:
        return float(np.sum(np.abs(d[-_tail_size(m) :])))
    r = max(r, 0.5)
    return float(2.0 * env[m - 2] * r * r / (1.0 - r))


def predicted_degree(d: np.ndarray, target: float) -> float:
    r"""Degree at which the envelope of the Chebyshev coefficients ``d`` falls below ``target``.

    The envelope is extrapolated geometrically from its slope over the upper half of
    ``d``.  Returns ``inf`` when it does not decay there (rounding noise, or a piece far
    too wide to tell).
    """
    env = _envelope(d)
    m = env.size
    j1, j2 = m // 2, m - 1
    if env[j2] <= target:
        above = np.flatnonzero(env > target)
        return float(above[-1] + 1) if above.size else 0.0
    if env[j1] <= 0 or env[j2] <= 0:
        return float(m - 1)
    slope = (math.log(env[j2]) - math.log(env[j1])) / (j2 - j1)
    if slope > -0.1:  # decay slower than 10 % per degree: no usable trend
        return math.inf
    return j2 + (math.log(target) - math.log(env[j2])) / slope


def _next_level(m: int, d: np.ndarray, tol_df: float, lax: bool) -> int | None:
    """The level to sample next, or None to split the piece now.

    With ``lax``, a level of size ``L`` accepts a piece when :func:`tail_error`, about
    ``2 E_{L-2}``, is below ``tol_df / 4``: the envelope must fall below ``tol_df / 8``
    by degree ``L - 2``.  Otherwise the sum of its last quarter ``q`` coefficients must
    be below ``tol_df / 4``: each below ``tol_df / (4q)`` from degree ``L - q``.
    """
    for L in LEVELS:
        if L > m:
            q = 2 if lax else _tail_size(L)
            need = predicted_degree(d, tol_df / (8 if lax else 4 * q))
            if not math.isfinite(need):
                return LEVELS[LEVELS.index(m) + 1]  # undecided: refine, never split on noise
            if L - q > need:
                return L
    return None


def build_pieces(
    sample, intervals, lo, hi, atol, rtol, rtol_df, noise, max_pieces, split=True, lax=True
):
    r"""Adaptive piecewise interpolation of :math:`g'`, integrated to :math:`g`.

    Parameters
    ----------
    sample : callable
        ``sample(alphas)`` returns the ``(k, 2)`` array of exact :math:`(g, g')`.
    intervals : sequence of (float, float)
        Initial pieces.
    lo, hi : float
        The whole interval (for messages).
    atol, rtol, rtol_df, noise : float
        Tolerances (see :func:`pymc_sparse.logdet1d.table.logdet_family`) and the
        rounding noise of one sample of :math:`g`.
    max_pieces : int
        Guard on the number of pieces.
    split : bool
        Whether a piece predicted to need more than the finest level is split before
        reaching it, and one predicted to need a higher level jumps to it (the fixed
        ladder when False: refine level by level, split only after the finest level).
    lax : bool
        Accept on :func:`tail_error` (the geometric extrapolation of the last
        coefficients) rather than on the sum of the last quarter of them.  Only where the
        samples' rounding noise is far below the tolerance: noise whose coefficients sit
        just under the tolerance is not seen as a flat tail at 9 or 17 points.

    Returns
    -------
    list of (a, b, coef, noise)
        Accepted pieces, sorted, with the series of :math:`g` and the rounding noise
        read off a tail that stopped decaying (0 when the tail criterion held).

    Notes
    -----
    :math:`g'` is interpolated from its own samples, so its error is the interpolation
    error plus the rounding of the samples, not the samples' noise amplified by
    differentiation (~:math:`m^2/h`) as for the derivative of an interpolant of
    :math:`g`.  :math:`g` is the integral of that series, its constant fitted to the
    samples of :math:`g`; the misfit at the samples checks the two against each other.
    """
    active = [(float(a), float(b), LEVELS[0]) for a, b in intervals]
    done = []
    while active:
        grids = [0.5 * (a + b) + 0.5 * (b - a) * _lobatto(m) for a, b, m in active]
        values = sample(np.concatenate(grids))
        nxt = []
        start = 0
        for (a, b, m), x in zip(active, grids):
            v, dv = values[start : start + m].T
            start += m
            hw = 0.5 * (b - a)
            if not (np.all(np.isfinite(v)) and np.all(np.isfinite(dv))):
                raise ValueError(
                    f"Q(alpha) is not positive definite at some alpha in [{a:.6g}, {b:.6g}]; "
                    "shrink the interval to the support where A0 + alpha*A1 is SPD."
                )
            d = _coefficients(dv)
            tol_f = atol + rtol * np.max(np.abs(v)) + 4 * noise
            tol_df = atol + rtol_df * np.max(np.abs(dv))
            if split:
                # g is the integral of the g' series: an error e in g' moves g by up to
                # 2 hw e, and the misfit check below wants tol_f / 2.  On wide pieces
                # (the SPDE family spans decades of kappa^2) this is the binding
                # tolerance; planning for it avoids refining a piece that must be split.
                tol_df = min(tol_df, tol_f / (4 * hw))
            q = _tail_size(m)
            tail = np.abs(d[-q:])
            err = tail_error(d) if lax else float(np.sum(tail))
            ok_df = err <= tol_df / 4
            # At the finest level, coefficients that no longer decay are rounding noise of
            # the samples: splitting cannot reduce it; certification reports what is reached.
            flat = m == LEVELS[-1] and tail.max() >= 0.1 * np.abs(d[m // 2 : m // 2 + q]).max()
            if ok_df or flat:
                t = _lobatto(m)
                dch = _chop(d, max(tol_df, err) / 4)
                c = _integrate(dch, hw, t, v)
                misfit = np.max(np.abs(v - np.polynomial.chebyshev.chebval(t, c)))
                if misfit <= tol_f / 2:
                    # White noise of sd s in the samples gives coefficients of rms
                    # s * sqrt(2 / m); the interpolant carries it times its Lebesgue
                    # constant (<= 3.3 for m <= 33).
                    sd = np.sqrt(np.mean(d[-q:] ** 2) * m / 2) if flat and not ok_df else 0.0
                    done.append((a, b, c, 3.3 * sd))
                    continue
            level = None
            if m < LEVELS[-1]:
                level = _next_level(m, d, tol_df, lax) if split else LEVELS[LEVELS.index(m) + 1]
            if level is not None:
                nxt.append((a, b, level))
                continue
            if len(done) + len(nxt) + len(active) + 2 > max_pieces:
                raise RuntimeError(
                    f"The log-determinant needed more than {max_pieces} pieces on [{lo:.6g}, "
                    f"{hi:.6g}]; the interval probably reaches too close to a singular point "
                    "that was not declared. Shrink it, declare `singularities`, or raise "
                    "max_pieces."
                )
            mid = 0.5 * (a + b)
            nxt.extend([(a, mid, LEVELS[0]), (mid, b, LEVELS[0])])
        active = nxt
    done.sort(key=lambda p: p[0])
    return done
