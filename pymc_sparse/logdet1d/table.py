r"""Log-determinants of one-parameter precision families in :math:`O(1)` per evaluation.

(About 575 lines, half of them docstrings: the table object, its builder and the
certification share the piece layout; sampling and degree selection already live in
:mod:`.exact` and :mod:`.adaptive`.)

For a precision that is affine in one scalar,

.. math:: Q(\alpha) = A_0 + \alpha A_1, \qquad \alpha \in [\mathrm{lo}, \mathrm{hi}],

the log-determinant :math:`f(\alpha) = \log\det Q(\alpha)` is a smooth function of one
variable with derivative

.. math:: f'(\alpha) = \operatorname{tr}\bigl(Q(\alpha)^{-1} A_1\bigr)
          = \sum_e w_e\, S_e\, (A_1)_e ,

a sum over the stored lower-triangle entries ``e`` with :math:`S = Q^{-1}` on the
pattern (the selected inverse) and :math:`w_e = 1` on the diagonal, 2 off it.

:func:`logdet_family` builds, once, a piecewise Chebyshev interpolant of the smooth part

.. math:: g(\alpha) = f(\alpha) - \sum_s k_s \log|\alpha - s|

where the :math:`k_s \log|\alpha - s|` are known logarithmic singularities at end points
of the support (a proper CAR :math:`D - \alpha W` is singular at :math:`\alpha = 1` with
multiplicity the number of connected components, and at :math:`\alpha = -1` with
multiplicity the number of bipartite components).  Each piece samples :math:`g'` (one
factorisation and one selected inverse per point, :mod:`pymc_sparse.logdet1d.exact`) at
nested Chebyshev--Lobatto points (9, 17, 33) and is split in two when the Chebyshev
coefficients of :math:`g'` show it needs more (:mod:`pymc_sparse.logdet1d.adaptive`
predicts that from the first 9 and splits at once); :math:`g` is the integral of that
series, its constant fitted to the samples of :math:`g` from the same factorisations.
The samples of one level are taken as a batch, in forked worker processes on every core
(``workers``) for large :math:`n`.  Interpolating :math:`g'`
from its own samples, rather than differentiating an interpolant of :math:`g`, keeps the
samples' rounding out of :math:`f'` (a derivative amplifies it by ~:math:`m^2/h`), which
is what brings :math:`f'` to 1e-9 absolute.  The initial partition is graded
geometrically toward singular ends.  The result is then *certified*: at random points
(at least one in every piece, four near a singular end) :math:`f` and :math:`f'` are
recomputed exactly and compared with the table; pieces that fail are split and rebuilt.

Close to a singular end the exact :math:`f'` is itself rounded like
:math:`\varepsilon\,\kappa(Q)\,|f'|`, above 1e-9 within ~1e-3 of the end point.  The
table stops where the noise of its samples (read off the Chebyshev tail) or a failed
check says the bound cannot be certified, and the Op evaluates exactly beyond
(``fam.lo``, ``fam.hi``; ``fam.info["requested_interval"]``).

An evaluation is a binary search among the pieces, a Clenshaw recurrence of degree at
most 32 and the singular terms: :math:`O(1)` in :math:`n`.  Outside the tabulated
interval the Op falls back to an exact factorisation (correct, but :math:`O(\text{flops
of a factorisation})`).

See ``docs/theory/logdet1d.md`` for the derivation, the families covered (proper CAR,
Leroux, SAR) and the accuracy measured.

Length: a little under 600 lines, one concept (build, certify and evaluate one table): the
certificate and the table share the piece representation and the singular
terms, and splitting them would pass those internals across modules.

References
----------
.. [1] Pace, R. K. and Barry, R. (1997). Quick computation of spatial autoregressive
   estimators. *Geographical Analysis* 29(3), 232-247.
.. [2] Bivand, R., Hauke, J. and Kossowski, T. (2013). Computing the Jacobian in
   Gaussian spatial autoregressive models: an illustrated comparison of available
   methods. *Geographical Analysis* 45(2), 150-179.
.. [3] Trefethen, L. N. (2019). *Approximation Theory and Approximation Practice*,
   extended edition. SIAM. (Chebyshev interpolation, coefficient decay, chopping.)
.. [4] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*. Chapman & Hall, 2.4.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.validate import symmetric_csc
from pymc_sparse.logdet1d.adaptive import build_pieces
from pymc_sparse.logdet1d.chebyshev import _clenshaw, _derivative_coefficients, _graded_breaks
from pymc_sparse.logdet1d.exact import Sampler, _diag_scale, _exact_smooth

__all__ = ["LogDetFamily", "Singularity", "logdet_family"]


@dataclass(frozen=True)
class Singularity:
    r"""A term :math:`k \log|\alpha - s|` removed from :math:`f` before interpolation.

    Parameters
    ----------
    point : float
        The singular value :math:`s` of the parameter (outside or at the end of the
        tabulated interval).
    multiplicity : int
        :math:`k`, the dimension of the null space of :math:`Q(s)`.
    """

    point: float
    multiplicity: int

    def value(self, alpha):
        return self.multiplicity * np.log(np.abs(alpha - self.point))

    def derivative(self, alpha, order: int = 1):
        d = alpha - self.point
        if order == 1:
            return self.multiplicity / d
        return -self.multiplicity / d**2


class LogDetFamily:
    r"""Tabulated :math:`f(\alpha) = \log\det(A_0 + \alpha A_1)` with exact fallback.

    Build it with :func:`logdet_family` (or the CAR/Leroux/SAR helpers).  Calling it on
    a symbolic scalar gives a differentiable PyTensor scalar (:class:`OneParameterLogDet`).

    Attributes
    ----------
    pattern : SparsityPattern
        Union pattern of :math:`A_0` and :math:`A_1`.
    a0, a1 : ndarray
        Stored values of :math:`A_0`, :math:`A_1` on ``pattern``.
    lo, hi : float
        Tabulated interval.
    singularities : tuple of Singularity
        Terms removed before interpolation and added back exactly.
    breaks : ndarray
        ``npieces + 1`` piece boundaries.
    coef, dcoef, d2coef : ndarray
        ``(npieces, K)`` Chebyshev coefficients (zero padded) of :math:`g`, :math:`g'`,
        :math:`g''` on each piece, in the variable :math:`t \in [-1, 1]`.
    info : dict
        Build statistics: ``evaluations`` (exact factorisations), ``selected_inverses``,
        ``pieces``, ``build_seconds``, ``max_error_f``, ``max_error_df`` (certified on the
        random check points), ``check_points``, ``atol``, ``rtol``.
    """

    def __init__(self, pattern, a0, a1, lo, hi, singularities, offset, breaks, coef, info):
        self.pattern = pattern
        self.a0 = np.asarray(a0, dtype=np.float64)
        self.a1 = np.asarray(a1, dtype=np.float64)
        self.lo = float(lo)
        self.hi = float(hi)
        self.singularities = tuple(singularities)
        self.offset = float(offset)
        self.breaks = np.asarray(breaks, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        hw = 0.5 * np.diff(self.breaks)
        K = self.coef.shape[1]

        def pad(rows):
            out = np.zeros((len(rows), K))
            for i, r in enumerate(rows):
                out[i, : r.size] = r
            return out

        self.dcoef = pad([_derivative_coefficients(c, h, 1) for c, h in zip(self.coef, hw)])
        self.d2coef = pad([_derivative_coefficients(c, h, 2) for c, h in zip(self.coef, hw)])
        self.info = dict(info)
        #: ``sum(log d)`` for a row-standardised SAR family (see sar_logdet_family), else 0.
        self.logdet_d = 0.0
        for a in (self.a0, self.a1, self.breaks, self.coef, self.dcoef, self.d2coef):
            a.flags.writeable = False
        h = hashlib.blake2b(digest_size=16)
        h.update(pattern.key)
        for a in (self.a0, self.a1, self.breaks, self.coef):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((self.singularities, self.offset)).encode())
        self._key = h.digest()

    # -- identity (an Op prop) -------------------------------------------------------
    def __eq__(self, other) -> bool:
        return isinstance(other, LogDetFamily) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return (
            f"LogDetFamily(n={self.pattern.n}, interval=[{self.lo:.6g}, {self.hi:.6g}], "
            f"pieces={self.breaks.size - 1})"
        )

    @property
    def n(self) -> int:
        """Matrix order."""
        return self.pattern.n

    # -- exact evaluation ----------------------------------------------------------------
    def exact(self, alpha: float, derivative: bool = True) -> tuple[float, float]:
        r"""Exact :math:`(f(\alpha), f'(\alpha))` from one factorisation (NaN if not SPD).

        :math:`f'` needs the selected inverse; pass ``derivative=False`` to skip it.
        """
        g, dg = _exact_smooth(self.pattern, self.a0, self.a1, self._c, float(alpha), derivative)
        return (
            g + self.offset,
            dg if derivative else float("nan"),
        )

    @property
    def _c(self):
        return _diag_scale(self.pattern, self.a0)[0]

    def _sing(self, alpha, order):
        s = 0.0
        for sg in self.singularities:
            s = s + (sg.value(alpha) if order == 0 else sg.derivative(alpha, order))
        return s

    # -- table evaluation ------------------------------------------------------------
    def contains(self, alpha: float) -> bool:
        """Whether ``alpha`` lies in the tabulated interval."""
        return self.lo <= alpha <= self.hi

    def table(self, alpha: float, derivative: int = 0) -> float:
        r"""The interpolant of :math:`f` (``derivative=0``), :math:`f'` or :math:`f''`.

        Only meaningful inside ``[lo, hi]``; NaN outside.
        """
        alpha = float(alpha)
        if not (self.lo <= alpha <= self.hi):
            return float("nan")
        i = int(np.searchsorted(self.breaks, alpha, side="right")) - 1
        i = min(max(i, 0), self.coef.shape[0] - 1)
        a, b = self.breaks[i], self.breaks[i + 1]
        t = (2.0 * alpha - (a + b)) / (b - a)
        c = (self.coef, self.dcoef, self.d2coef)[derivative][i]
        v = _clenshaw(t, c) + self._sing(alpha, derivative)
        return v + self.offset if derivative == 0 else v

    def evaluate(self, alpha: float, derivative: int = 0) -> float:
        r""":math:`f^{(d)}(\alpha)` from the table inside ``[lo, hi]``, exactly outside.

        Outside the table ``derivative=2`` is a central difference of exact :math:`f'`.
        """
        alpha = float(alpha)
        if not np.isfinite(alpha):
            return float("nan")
        if self.lo <= alpha <= self.hi:
            return self.table(alpha, derivative)
        if derivative == 0:
            return self.exact(alpha, derivative=False)[0]
        if derivative == 1:
            return self.exact(alpha)[1]
        dist = min((abs(alpha - s.point) for s in self.singularities), default=1.0)
        h = 1e-6 * max(1e-3, dist)
        return (self.exact(alpha + h)[1] - self.exact(alpha - h)[1]) / (2 * h)

    # -- symbolic ---------------------------------------------------------------------
    def __call__(self, alpha):
        r"""Symbolic :math:`\log\det Q(\alpha)` of a scalar PyTensor variable, differentiable."""
        # The one upward reference of this layer, imported on use: a table is numeric,
        # and only a caller that already holds a PyTensor variable reaches this line.
        from pymc_sparse.ops.table import tabulated_logdet

        return tabulated_logdet(self, alpha)


def _assemble(pieces):
    breaks = np.array([p[0] for p in pieces] + [pieces[-1][1]])
    K = max(p[2].size for p in pieces)
    coef = np.zeros((len(pieces), K))
    for i, p in enumerate(pieces):
        coef[i, : p[2].size] = p[2]
    return breaks, coef


def logdet_family(
    A0,
    A1,
    interval,
    *,
    singularities=(),
    atol: float = 1e-9,
    rtol: float = 1e-12,
    rtol_df: float = 0.0,
    check_points: int = 8,
    seed: int = 0,
    max_pieces: int = 200,
    max_width: float = 0.5,
    end_zone: float = 0.01,
    workers: int | None = None,
    adaptive_split: bool = True,
) -> LogDetFamily:
    r"""Tabulate :math:`f(\alpha) = \log\det(A_0 + \alpha A_1)` on an interval.

    Parameters
    ----------
    A0, A1 : scipy.sparse matrix or ndarray
        Symmetric ``n x n`` matrices; :math:`A_0 + \alpha A_1` must be positive definite
        for every :math:`\alpha` in ``interval``.
    interval : (float, float)
        ``(lo, hi)``, the tabulated range.  Outside it the Op still returns exact values
        (one factorisation each).
    singularities : sequence of (point, multiplicity) or Singularity
        Known points :math:`s` outside ``(lo, hi)`` where :math:`Q(s)` is singular with
        null space of dimension :math:`k`; the term :math:`k\log|\alpha - s|` is removed
        before interpolation and added back exactly, and the initial partition is graded
        toward :math:`s`.  The CAR/Leroux/SAR helpers fill this in.
    atol, rtol, rtol_df : float
        Target accuracy: at every point, :math:`|\hat f - f| \le \mathrm{atol} +
        \mathrm{rtol}\,|f - \ell_0|` and :math:`|\hat f' - f'| \le \mathrm{atol} +
        \mathrm{rtol\_df}\,|f'|`, where :math:`\ell_0 = \sum_j \log (A_0)_{jj}`.  The
        default is 1e-9 absolute on :math:`f'` (``rtol_df = 0``).  The exact values are
        themselves rounded: the samples of :math:`f` carry noise of ~1e-13 (n = 1e4) to
        ~1e-12 (n = 1e5), and close to a singular point the exact :math:`f'` loses
        accuracy like :math:`\varepsilon\,\kappa(Q)\,|f'|`.  A positive ``rtol_df``
        (e.g. 1e-10) lets the table reach closer to a singular end.
    check_points : int
        Random certification points in addition to one per piece (four within
        ``end_zone`` of a singular end, certified there to half the tolerance) and the two
        ends; at each, :math:`f` and :math:`f'` are recomputed exactly and compared
        (``info["max_error_f"]``, ``info["max_error_df"]``, ``info["certified"]``).
        Pieces that fail are split and rebuilt; a warning is raised if the bound still
        fails after 3 rounds away from a singular end.
    end_zone : float
        Fraction of the interval, next to a singular end point, where pieces whose exact
        :math:`f'` is too noisy for the tolerance are dropped: the table then stops short
        of ``interval`` and the Op evaluates exactly beyond it.
    seed : int
        Seed of the random certification points.
    max_pieces, max_width : int, float
        Guard on the number of pieces; widest initial piece.
    workers : int or None
        Processes sampling the exact values (forked, see
        :class:`~pymc_sparse.logdet1d.exact.Sampler`): ``None`` uses every available
        core when ``n >= 20,000`` and one process below; ``1`` turns parallel sampling
        off.  The table is the same either way.
    adaptive_split : bool
        Split a piece as soon as its coefficients predict it needs more than the finest
        level (:mod:`pymc_sparse.logdet1d.adaptive`); False splits only after sampling
        the finest level (the previous builder; for comparisons).

    Returns
    -------
    LogDetFamily

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> W = sp.diags([1.0, 1.0], [-1, 1], shape=(50, 50))
    >>> D = sp.diags(W.sum(1).A1)
    >>> fam = logdet_family(D, -W, (0.0, 0.9))
    >>> bool(abs(fam.table(0.5) - fam.exact(0.5)[0]) < 1e-9)
    True
    """
    t0 = time.perf_counter()
    lo, hi = (float(interval[0]), float(interval[1]))
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"`interval` must be (lo, hi) with finite lo < hi, got {interval!r}.")
    sings = tuple(
        s if isinstance(s, Singularity) else Singularity(float(s[0]), int(s[1]))
        for s in singularities
    )
    for s in sings:
        if lo <= s.point <= hi:
            raise ValueError(
                f"Singular point {s.point} lies inside the interval [{lo}, {hi}]; tabulate on a "
                "closed interval strictly inside the support, e.g. (lo, 1 - 1e-6)."
            )
    pattern, a0, a1 = _union_values(A0, A1)
    c, offset = _diag_scale(pattern, a0)
    n = pattern.n
    # Rounding noise of one sample of g (measured: ~1e-13 at n = 1e4, ~1e-12 at 1e5).
    noise = 16 * np.finfo(float).eps * math.sqrt(n) * (1.0 + float(np.mean(np.abs(np.log(c)))))
    cache: dict[float, tuple[float, float]] = {}

    def sing(alpha, order=0):
        return sum((s.value(alpha) if order == 0 else s.derivative(alpha, order)) for s in sings)

    with Sampler(pattern, a0, a1, c, workers) as sampler:

        def sample(alphas):
            """Exact (g, g') with the singular terms removed; each alpha computed once."""
            alphas = [float(x) for x in alphas]
            new = sorted({x for x in alphas if x not in cache})
            for x, (g, dg) in zip(new, sampler(new)):
                cache[x] = (g - sing(x), dg - sing(x, 1))
            return np.array([cache[x] for x in alphas]).reshape(len(alphas), 2)

        def build(intervals, strict=False):
            # Near a singular end the samples' rounding noise approaches the tolerance:
            # accept there only on the sum of the tail (strict), which sees the noise.
            return build_pieces(
                sample,
                intervals,
                lo,
                hi,
                atol,
                rtol,
                rtol_df,
                noise,
                max_pieces,
                split=adaptive_split,
                lax=adaptive_split and not strict,
            )

        def misses(fam, xs, margins):
            """The table's errors (f, f') at xs against fresh exact evaluations, and verdicts."""
            out = []
            for x, m, (g, dg) in zip(xs, margins, sampler(xs)):
                ef = abs(fam.table(x) - offset - g)
                edf = abs(fam.table(x, 1) - dg)
                tol_f, tol_df = atol + rtol * abs(g) + 4 * noise, atol + rtol_df * abs(dg)
                out.append((ef, edf, ef > m * tol_f or edf > m * tol_df))
            return out

        pieces, bad, errors = _build_and_certify(
            build,
            misses,
            sings,
            lo,
            hi,
            max_width,
            end_zone,
            atol,
            check_points,
            seed,
            lambda pieces: _family(pattern, a0, a1, sings, offset, pieces),
        )
    worst_f = max(e[1] for e in errors)
    worst_df = max(e[2] for e in errors)
    if bad:
        warnings.warn(
            f"Log-determinant table on [{lo:.6g}, {hi:.6g}] missed its tolerance at some check "
            f"points (max |error| f: {worst_f:.3g}, f': {worst_df:.3g}); the values there are "
            "limited by the accuracy of the exact evaluations.",
            UserWarning,
            stacklevel=2,
        )
    fam = _family(pattern, a0, a1, sings, offset, pieces)
    fam.info = {
        "evaluations": sampler.evaluations,
        "selected_inverses": sampler.evaluations,
        "samples": len(cache),
        "workers": sampler.workers,
        "pieces": len(pieces),
        "max_degree": int(fam.coef.shape[1] - 1),
        "build_seconds": time.perf_counter() - t0,
        "max_error_f": worst_f,
        "max_error_df": worst_df,
        "certified": not bad,
        "check_points": sampler.evaluations - len(cache),
        "requested_interval": (lo, hi),
        "atol": atol,
        "rtol": rtol,
        "rtol_df": rtol_df,
    }
    return fam


def _family(pattern, a0, a1, sings, offset, pieces):
    breaks, coef = _assemble(pieces)
    return LogDetFamily(
        pattern, a0, a1, pieces[0][0], pieces[-1][1], sings, offset, breaks, coef, {}
    )


def _build_and_certify(
    build, misses, sings, lo, hi, max_width, end_zone, atol, check_points, seed, family
):
    """Build the pieces, drop the noise-limited end zones, certify at random points.

    Returns the pieces, the indices of pieces that failed their last check and the
    ``(piece, error f, error f')`` of every check point.
    """
    zone = end_zone * (hi - lo)
    mid = 0.5 * (lo + hi)

    def near_end(a, b):
        """Whether piece [a, b] lies within ``zone`` of a singular end point."""
        return any(
            (s.point >= hi and s.point - a <= zone) or (s.point <= lo and b - s.point <= zone)
            for s in sings
        )

    def trim(pieces, bad):
        """Drop the pieces from the outermost failing one to each singular end."""
        upper = [i for i in bad if pieces[i][0] >= mid and near_end(*pieces[i][:2])]
        lower = [i for i in bad if pieces[i][1] <= mid and near_end(*pieces[i][:2])]
        return range(max(lower) + 1 if lower else 0, min(upper) if upper else len(pieces))

    # Pieces whose g' samples are noisier than the tolerance (the exact f' loses accuracy
    # like eps * kappa(Q) * |f'| toward a singular end): the table stops before them.  The
    # end zones are built from the interior outward, both sides in one batch, and each
    # side stops at its first such piece, whose outer neighbours would only be dropped too.
    breaks0 = _graded_breaks(lo, hi, [s.point for s in sings], max_width)
    initial = list(itertools.pairwise(breaks0))
    pieces = build([p for p in initial if not near_end(*p)])
    sides = [
        sorted(p for p in initial if near_end(*p) and p[0] >= mid),
        sorted((p for p in initial if near_end(*p) and p[1] <= mid), reverse=True),
    ]
    for k in range(max(map(len, sides))):
        batch = [side[k] for side in sides if k < len(side)]
        if not batch:
            break
        new = build(batch, strict=True)
        pieces.extend(new)
        for s, side in enumerate(sides):
            if k < len(side):
                a, b = side[k]
                if any(p[3] > atol / 2 for p in new if a <= p[0] and p[1] <= b):
                    sides[s] = side[: k + 1]  # stop this side
    pieces.sort(key=lambda p: p[0])
    keep = trim(pieces, {i for i, p in enumerate(pieces) if p[3] > atol / 2})
    pieces = pieces[keep.start : keep.stop]
    if not pieces:
        raise RuntimeError(
            f"The exact f' is too noisy for the tolerance everywhere on [{lo:.6g}, {hi:.6g}]; "
            "use the exact path or raise `atol`/`rtol_df`."
        )
    rng = np.random.default_rng(seed)
    for _round in range(4):
        fam = family(pieces)
        # The interval's ends too: there an interpolant's derivative error peaks.  Near a
        # singular end the exact f' is noisier and so is the table: more points per piece.
        per_piece = [4 if near_end(a, b) else 1 for a, b, *_ in pieces]
        pts = np.concatenate(
            [[fam.lo, fam.hi], rng.uniform(fam.lo, fam.hi, check_points)]
            + [rng.uniform(a, b, k) for (a, b, *_), k in zip(pieces, per_piece)]
        )
        idx = [
            min(int(np.searchsorted(fam.breaks, x, side="right")) - 1, len(pieces) - 1) for x in pts
        ]
        # Near a singular end the errors are random (rounding of the samples), and a few
        # points sample them: certify there with a factor 2 in hand.
        margins = [0.5 if per_piece[i] > 1 else 1.0 for i in idx]
        res = misses(fam, [float(x) for x in pts], margins)
        errors = [(i, ef, edf) for i, (ef, edf, _) in zip(idx, res)]
        bad = {i for i, (_, _, miss) in zip(idx, res) if miss}
        if not bad or _round == 3:
            break
        halves = []
        for i in sorted(bad, reverse=True):
            a, b, *_ = pieces.pop(i)
            halves.extend([(a, 0.5 * (a + b)), (0.5 * (a + b), b)])
        rebuilt = build([h for h in halves if not near_end(*h)])
        rebuilt += build([h for h in halves if near_end(*h)], strict=True)
        pieces = sorted(pieces + rebuilt, key=lambda p: p[0])
    # Close to a singular end point the exact f' itself (a sum of selected-inverse entries)
    # loses accuracy like eps * kappa(Q) * |f'|; where the table cannot be certified there,
    # it stops, and the Op evaluates exactly beyond it (one factorisation per call).
    keep = trim(pieces, bad)
    if len(keep) < len(pieces):
        pieces = pieces[keep.start : keep.stop]
        bad = {i - keep.start for i in bad if i in keep}
        errors = [(i - keep.start, ef, edf) for i, ef, edf in errors if i in keep]
        # The new ends were only tested as interior points of their pieces.
        fam = family(pieces)
        ends = [(0, fam.lo), (len(pieces) - 1, fam.hi)]
        for (i, _), (ef, edf, miss) in zip(ends, misses(fam, [x for _, x in ends], [0.5, 0.5])):
            errors.append((i, ef, edf))
            if miss:
                bad.add(i)
    return pieces, bad, errors


def _union_values(A0, A1):
    A0 = symmetric_csc(A0, "A0", rtol=1e-12)
    A1 = symmetric_csc(A1, "A1", rtol=1e-12)
    if A0.shape != A1.shape:
        raise ValueError(f"A0 and A1 must have the same shape, got {A0.shape} and {A1.shape}.")
    # Union pattern with explicit zeros: |A0| + |A1| + I keeps every structural entry.
    P = abs(A0) + abs(A1) + sp.identity(A0.shape[0], format="csc")
    pattern, _ = SparsityPattern.from_scipy(P)
    r, cidx = pattern.rows, pattern.cols
    a0 = np.asarray(A0[r, cidx]).ravel()
    a1 = np.asarray(A1[r, cidx]).ravel()
    return pattern, a0, a1
