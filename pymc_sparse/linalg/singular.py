r"""Numerical singularity of a sparse Cholesky factorisation: screen, confirm, classify.

Numerical singularity (details and measurements: docs/reliability.md).  CHOLMOD stops
only at a pivot :math:`d_j = L_{jj}^2 \le 0`; on a singular positive semi-definite matrix
(the structure matrix :math:`D - W` of an ICAR model) the pivot that should be zero is
rounding noise, positive about half of the time.  Two steps separate it from a valid,
ill-conditioned matrix:

1. *Screen* (every factorisation, O(n)): pivots with :math:`d_j \le \sqrt{\varepsilon}\,
   Q_{jj}` are suspects (:math:`d_j/Q_{jj}` is the relative change of :math:`Q_{jj}` that
   makes the leading block singular).  A threshold :math:`c\,n\varepsilon Q_{jj}` cannot
   be both safe and scale-free: noise pivots of scaled ICAR matrices reached
   :math:`370\,n\varepsilon Q_{jj}`, valid local near-singularity gives
   :math:`d_j/Q_{jj} \approx 1/\kappa` at any ``n``.
2. *Confirm* (at most four suspects, one triangular solve each): with
   :math:`w = L_{jj} P^\top L^{-\top} e_j` (so :math:`w_j = 1`, :math:`w^\top Q w = d_j`),

   .. math:: \rho_j = \frac{w^\top Q w}{|w|^\top |Q|\,|w|}

   is invariant under diagonal scaling and is the componentwise relative perturbation of
   :math:`Q` that annihilates the quadratic form along :math:`w`; evaluating its numerator
   errs by at most :math:`\gamma_m` times the denominator (Higham 2002, sec. 3.1), about
   :math:`\sqrt{m}u` in practice (Higham and Mary 2019).  Singular when
   :math:`\rho_j \le 16\varepsilon`: measured :math:`\rho_j \le 0.81\varepsilon` on 283
   singular ICAR matrices, :math:`\ge 225\varepsilon` on ICAR plus a ridge at condition
   :math:`10^{13}`-:math:`10^{14}`.  (Higham's Theorem 10.7 is sufficient, not necessary,
   and would reject valid matrices of condition :math:`10^8` at :math:`n = 10^4`.)

References
----------
.. [1] Higham, N. J. (2002). Accuracy and Stability of Numerical Algorithms, 2nd ed.,
   SIAM, ch. 3 and ch. 10 (Cholesky factorisation).
.. [2] Higham, N. J. and Mary, T. (2019). A new approach to probabilistic rounding error
   analysis. SIAM J. Sci. Comput. 41, A2815-A2835.
"""

from __future__ import annotations

import numpy as np
from sksparse import cholmod as _cholmod

__all__ = [
    "SINGULAR_RTOL",
    "SINGULAR_SCREEN",
    "classify_breakdown",
    "first_bad_pivot",
    "null_direction_ratio",
]

_EPS = float(np.finfo(np.float64).eps)
#: Pivots with d_j <= SCREEN * Q_jj are examined (step 1).
SINGULAR_SCREEN = float(np.sqrt(_EPS))
#: Q is singular when rho_j <= SINGULAR_RTOL (step 2).
SINGULAR_RTOL = 16 * _EPS
#: Suspects confirmed per factorisation (one triangular solve each).
MAX_SUSPECTS = 4


def null_direction_ratio(chol, is_ll: bool, j: int, Ljj: float, pattern, data) -> float:
    r"""Return :math:`|\rho_j|`, :math:`\rho_j = w^\top Q w / |w|^\top|Q||w|` (module notes)."""
    e = np.zeros(pattern.n)
    e[j] = 1.0
    if is_ll:  # w = L_jj L^{-T} e_j
        w = np.asarray(chol.solve_Lt(e, use_LDLt_decomposition=False)).ravel() * Ljj
    else:  # unit L of L D L': w = L^{-T} e_j already has w_j = 1
        w = np.asarray(chol.solve_Lt(e, use_LDLt_decomposition=True)).ravel()
    x = np.asarray(chol.apply_Pt(w)).ravel()
    terms = pattern.symmetric_weights * data * x[pattern.rows] * x[pattern.cols]
    den = float(np.abs(terms).sum())
    return abs(float(terms.sum())) / den if den > 0 else 0.0


def first_bad_pivot(chol, d, qdiag, perm, pattern, data, complete: bool):
    """``(column, singular, pivot ratio)`` of the first pivot of ``d`` that is not positive.

    A zero pivot, or a negative one that is tiny next to its diagonal entry and whose
    direction is confirmed null (``complete``: the L D' L factor exists past it), is
    rounding noise around zero: singular rather than indefinite.
    """
    bad = np.flatnonzero(~(d > 0))
    if not bad.size:
        return -1, False, float("nan")
    j = int(bad[0])
    r = float(d[j] / qdiag[j]) if qdiag[j] > 0 else float("-inf")
    singular = r == 0.0 or (
        abs(r) <= SINGULAR_SCREEN
        and complete
        and null_direction_ratio(chol, False, j, 1.0, pattern, data) <= SINGULAR_RTOL
    )
    return int(perm[j]), bool(singular), r


def classify_breakdown(pattern, data, ordering):
    """Classify a supernodal breakdown with a simplicial L D L' factorisation.

    CHOLMOD's supernodal kernel zeroes the failing supernode, hiding the pivot; the
    simplicial kernel continues past negative pivots.  Run only when an error is raised.
    """
    A = pattern.lower_csc(data)
    chol = _cholmod.analyze(A, mode="simplicial", ordering_method=ordering).copy()
    complete = True
    try:
        chol.cholesky_inplace(A)
    except _cholmod.CholmodNotPositiveDefiniteError:  # an exact zero pivot
        complete = False
    perm = np.asarray(chol.P())
    d = np.asarray(chol.D(), dtype=np.float64)
    return first_bad_pivot(chol, d, data[pattern.diag_index[perm]], perm, pattern, data, complete)
