r"""The one place that talks to CHOLMOD: a shared, cached sparse Cholesky factor.

Every Op of the package (log-determinant, solve, selected inverse, sampling) and every
gradient of them asks :data:`CACHE` for the factor of ``(pattern, values)``:

* the symbolic analysis (fill-reducing ordering and elimination tree) runs once per
  :class:`~pymc_sparse.linalg.pattern.SparsityPattern`, also when several threads ask for
  a new pattern at once, and the ``symbolic_maxsize`` (16) most recently used are kept;
* the numeric factorisation runs once per distinct value vector (found by a 64-bit
  hash of its bytes and confirmed by comparing the values), and the ``maxsize`` (8) most
  recent are kept; the last factor of each pattern is found by the comparison alone;
* derived quantities (log-determinant, the explicit factor ``L``, the selected
  inverse) are computed lazily on the cached entry, so a log-density and its gradient
  at one point share one factorisation.

Failure policy: a matrix that is not positive definite, or is singular to working
precision, gives a *failed* entry.  The Ops turn that into NaN (a sampler rejects the
point); :func:`cholesky` and the other entry points outside a graph raise
:class:`NotPositiveDefiniteError`, or its subclass :class:`SingularPrecisionError`,
naming the column.  CHOLMOD reports an indefinite matrix in different ways (exception in
supernodal mode, a negative pivot in simplicial LDL' mode); all are normalised here.

Numerical singularity is detected in :mod:`pymc_sparse.linalg.singular` (docs/reliability.md).

The module is about 590 lines because :class:`Factor` and :class:`CholeskyCache`
share one locking and failure protocol; splitting them would put that protocol in two
places.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial

import numba
import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.cholmod_struct import factor_layout, read_pivots, symbolic_flops
from pymc_sparse.linalg.lru import clear_all
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.singular import (
    MAX_SUSPECTS,
    SINGULAR_RTOL,
    SINGULAR_SCREEN,
    classify_breakdown,
    first_bad_pivot,
    null_direction_ratio,
)
from pymc_sparse.linalg.supernodes import Supernodes
from pymc_sparse.linalg.takahashi import (
    map_pattern_to_factor,
    takahashi_simplicial,
    takahashi_supernodal,
)
from pymc_sparse.linalg.threads import NUMERIC_THREADS

__all__ = [
    "CACHE",
    "CholeskyCache",
    "Factor",
    "NotPositiveDefiniteError",
    "SingularPrecisionError",
    "cache_info",
    "cholesky",
    "clear_cache",
]

try:  # scikit-sparse is a hard dependency; keep the import error readable.
    from sksparse import cholmod as _cholmod
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "pymc_sparse needs scikit-sparse (CHOLMOD). On Debian run `bash dev.sh setup`, or:\n"
        "  apt-get install libsuitesparse-dev && pip install 'scikit-sparse>=0.4.12,<0.5'"
    ) from err


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """The matrix handed to a Cholesky factorisation is not positive definite."""


class SingularPrecisionError(NotPositiveDefiniteError):
    """The matrix is positive semi-definite but singular to working precision."""


@numba.njit(cache=True, nogil=True)
def _fingerprint(u):  # pragma: no cover - compiled
    # Four independent multiply-xor lanes over the 64-bit words: a single chain would
    # wait on every multiply.
    prime = np.uint64(0x100000001B3)
    h = np.array([0xCBF29CE484222325, 0x84222325CBF29CE4, 0x9E3779B97F4A7C15, 0x7F4A7C159E3779B9], dtype=np.uint64)  # fmt: skip  # noqa: E501
    for i in range(u.size):
        h[i & 3] = (h[i & 3] ^ u[i]) * prime
    out = np.uint64(u.size)
    for j in range(4):
        out = (out ^ h[j]) * prime
        out ^= out >> np.uint64(29)
    return np.int64(out)


# Below this order "auto" compares METIS with AMD, from it NESDIS with AMD.
_NESDIS_MIN_N = 5_000


def _digest(data: np.ndarray) -> int:
    """64-bit fingerprint of a contiguous float64 vector (its bits, so -0.0 != 0.0).

    A fingerprint, not a proof: a factor found under it is returned only if its values
    equal these (:meth:`CholeskyCache.factor`), so a collision costs a factorisation,
    never a wrong answer.  Compiled: about 1 us at n = 1,024, where SipHash of the bytes
    took 6 us.
    """
    return int(_fingerprint(data.view(np.uint64)))


@dataclass
class _Symbolic:
    """Symbolic analysis of one pattern, shared by all its numeric factors."""

    analysis: object
    lock: threading.RLock
    perm: np.ndarray
    # Data positions of the diagonal of Q[p][:, p] (the pivots' own entries).
    qdiag: np.ndarray
    ordering: str = "metis"  # the fill-reducing ordering this analysis used
    # Filled by the first numeric factor that extracts L.
    L_indptr: np.ndarray | None = None
    L_indices: np.ndarray | None = None
    # Supernodal factors (read in place, see pymc_sparse.linalg.takahashi): the plan of the
    # selected inversion, and where the entries of Q (q_to_x) and of the CSC form of L
    # (l_to_x) sit in CHOLMOD's supernodal values.  Filled by the first numeric factor.
    supernodes: Supernodes | None = None
    q_to_x: np.ndarray | None = None
    l_to_x: np.ndarray | None = None
    # (plan, positions of L_jj in the supernodal values), rebuilt when the plan changes.
    diag_x: tuple | None = None
    # Work arrays of the selected inversion (its output, and the packed values of a
    # simplicial factor or None), reused across numeric factors.
    selinv_work: list = field(default_factory=list, repr=False)
    # Simplicial factors: their fundamental supernodes and position maps.
    simplicial: object = None  # a cholmod_struct.SimplicialPlan
    # Lower-triangle CSC matrix refilled with each value vector (saves SciPy's checks).
    A: sp.csc_matrix | None = None
    # The last factor built for this pattern and its values: a value and its gradient at
    # one point ask for the same factor twice, and a comparison costs less than a digest.
    last: object = None


@dataclass
class Factor:
    """A numeric Cholesky factorisation of ``Q[p][:, p] = L L'`` and what derives from it.

    Instances come from :class:`CholeskyCache`; do not build them directly.  Attribute
    ``ok`` is False when ``Q`` is not positive definite or singular to working precision
    (then ``singular`` is True); every accessor then returns NaN-filled results instead of
    raising.  ``failed_column`` is the (unpermuted) column at which the factorisation
    broke down, ``pivot_ratio`` its pivot over its diagonal entry.
    """

    pattern: SparsityPattern
    symbolic: _Symbolic
    chol: object | None
    ok: bool
    failed_column: int = -1
    singular: bool | None = False  # None: a supernodal breakdown, classified on demand
    pivot_ratio: float = float("nan")
    _classify: object = field(default=None, repr=False)
    _logdet: float = float("nan")
    _L: sp.csc_matrix | None = field(default=None, repr=False)
    _selinv_L: np.ndarray | None = field(default=None, repr=False)
    _selinv_Q: np.ndarray | None = field(default=None, repr=False)
    _data: np.ndarray | None = field(default=None, repr=False)  # the values factorised
    _pivots: np.ndarray | None = field(default=None, repr=False)

    def pivots(self) -> np.ndarray:
        r"""Return the pivots :math:`d_j = L_{jj}^2` in the factor's (permuted) order.

        Read in place when the factor was computed, so free; NaN-filled if not positive
        definite.  ``perm = symbolic.perm`` maps pivot ``j`` to column ``perm[j]`` of Q.
        """
        if not self.ok or self._pivots is None:
            return np.full(self.pattern.n, np.nan)
        return self._pivots

    # -- scalars --------------------------------------------------------------------
    def logdet(self) -> float:
        r"""Return :math:`\log\det Q = 2\sum_j \log L_{jj}`, NaN if not positive definite."""
        return self._logdet

    # -- solves -------------------------------------------------------------------
    def solve(self, b: np.ndarray) -> np.ndarray:
        """Solve ``Q x = b`` for a vector or an ``(n, k)`` matrix ``b``."""
        b = np.asarray(b, dtype=np.float64)
        if not self.ok:
            return np.full(b.shape, np.nan)
        with self.symbolic.lock:
            x = self.chol.solve_A(b)
        return np.asarray(x, dtype=np.float64).reshape(b.shape)

    def solve_Lt_perm(self, z: np.ndarray) -> np.ndarray:
        """``P' L^{-T} z``: maps iid standard normals ``z`` to a draw from N(0, Q^{-1})."""
        z = np.asarray(z, dtype=np.float64)
        if not self.ok:
            return np.full(z.shape, np.nan)
        with self.symbolic.lock:
            y = self.chol.solve_Lt(z, use_LDLt_decomposition=False)
            x = self.chol.apply_Pt(y)
        return np.asarray(x, dtype=np.float64).reshape(z.shape)

    def _layout(self, need_l: bool = False, out: np.ndarray | None = None):
        """``(plan, x, maps)``: the values of ``L`` in supernodal layout, or None.

        A supernodal factor is read in place; a simplicial one is packed (into ``out`` if
        it fits) in the layout of its fundamental supernodes (:mod:`.cholmod_struct`).  ``maps``
        has ``q_to_x`` (entries of Q) and, for a simplicial factor or with ``need_l``,
        ``L_indptr``, ``L_indices`` and ``l_to_x`` (the CSC form of L).  None for a
        layout this module does not know (then CHOLMOD's ``L()`` is used).
        """
        return factor_layout(self.chol, self.pattern, self.symbolic, need_l, out)

    def L(self) -> sp.csc_matrix:
        """The explicit lower factor ``L`` (permuted order, sorted rows), cached.

        Read in place (supernodal) or from the packed values (simplicial) and copied out
        in CSC form, with CHOLMOD's pattern (explicit zeros of relaxed supernodes included).
        """
        if self._L is None:
            sym = self.symbolic
            n = self.pattern.n
            lay = self._layout(need_l=True)
            if lay is not None:
                _plan, x, maps = lay
                L = sp.csc_matrix((x[maps.l_to_x], maps.L_indices, maps.L_indptr), shape=(n, n))
            else:
                with sym.lock:
                    L = self.chol.L()
                L = sp.csc_matrix(L)
                if not L.has_sorted_indices:
                    L.sort_indices()
            self._L = L
        return self._L

    # -- selected inverse ---------------------------------------------------------
    def selected_inverse_factor(self) -> np.ndarray:
        """Entries of ``(L L')^{-1}`` on the pattern of ``L`` (permuted order, as ``L()``)."""
        if self._selinv_L is None:
            lay = self._layout(need_l=True)
            if lay is not None:
                plan, x, maps = lay
                self._selinv_L = takahashi_supernodal(plan, x)[maps.l_to_x]
            else:
                L = self.L()
                self._selinv_L = takahashi_simplicial(L.indptr, L.indices, L.data)
        return self._selinv_L

    def selected_inverse(self) -> np.ndarray:
        """Entries of ``Q^{-1}`` on the (lower-triangle) pattern of ``Q``, in data order."""
        if not self.ok:
            return np.full(self.pattern.nnz, np.nan)
        if self._selinv_Q is None:
            sym = self.symbolic
            # Only Q's entries are kept, so the work arrays (the kernel's output and the
            # packed values of a simplicial factor) go back to a per-pattern pool: fresh
            # ones cost their page faults and cache misses again on every call.
            with sym.lock:
                work = sym.selinv_work.pop() if sym.selinv_work else (None, None)
            lay = self._layout(out=work[1])
            if lay is not None:
                plan, x, maps = lay
                Z = work[0] if work[0] is not None and work[0].size == plan.xsize else None
                Z = takahashi_supernodal(plan, x, out=Z)
                self._selinv_Q = Z[maps.q_to_x]
                with sym.lock:
                    if len(sym.selinv_work) < 2:
                        sym.selinv_work.append((Z, x if maps is sym.simplicial else None))
                return self._selinv_Q
            L = self.L()
            q_to_l = map_pattern_to_factor(self.pattern, sym.perm, L.indptr, L.indices)
            self._selinv_Q = self.selected_inverse_factor()[q_to_l]
        return self._selinv_Q

    def selected_inverse_vjp(self, sbar: np.ndarray) -> np.ndarray:
        """Cotangent of the stored values of Q given a cotangent of ``selected_inverse()``.

        Implemented in :mod:`pymc_sparse.linalg.takahashi_adjoint` (second-order derivatives).
        """
        from pymc_sparse.linalg.takahashi_adjoint import selected_inverse_vjp

        return selected_inverse_vjp(self, np.asarray(sbar, dtype=np.float64))

    def marginal_variances(self) -> np.ndarray:
        """``diag(Q^{-1})``."""
        s = self.selected_inverse()
        return s[self.pattern.diag_index]

    def _resolve(self) -> None:
        # Classify a supernodal breakdown (singular or indefinite), once.
        if self.singular is None and self._classify is not None:
            self.failed_column, self.singular, self.pivot_ratio = self._classify()
            self._classify = None

    def raise_if_failed(self) -> None:
        """Raise :class:`NotPositiveDefiniteError` naming the failing column, if any.

        Raises
        ------
        SingularPrecisionError
            When the matrix is singular to working precision (module notes).
        NotPositiveDefiniteError
            When a pivot is negative or the values are not finite.
        """
        if self.ok:
            return
        self._resolve()
        c = self.failed_column
        if self.singular:
            raise SingularPrecisionError(
                f"The matrix is singular to working precision: the pivot of column {c} is "
                f"{self.pivot_ratio:.2g} times Q[{c}, {c}], rounding noise (a null vector "
                f"was confirmed, tolerance {SINGULAR_RTOL:.1e}). The structure matrix D - W "
                "of an intrinsic model (ICAR, random walk) is singular by construction: use "
                "ICAR (or BYM2), which handle its null space, add a sum-to-zero constraint, "
                "or add a proper term (CAR with |alpha| < 1, a small ridge tau * I)."
            )
        col = f" (the factorisation broke down at column {c} of Q)" if c >= 0 else ""
        raise NotPositiveDefiniteError(
            f"The matrix is not positive definite{col}. Check the signs of its "
            "entries, that alpha/rho lie inside their support, and that an intrinsic "
            "(rank-deficient) precision is not passed where a proper one is needed."
        )


class CholeskyCache:
    """LRU cache of CHOLMOD factors keyed by pattern and a digest of the values.

    Parameters
    ----------
    maxsize : int
        Number of numeric factors kept.  A NUTS step needs one (value and gradient at
        one point share it); a few more serve interleaved chains and models.
    ordering : str
        CHOLMOD ordering used by the symbolic analysis (``"amd"``, ``"metis"``,
        ``"nesdis"``, ``"default"``), or ``"auto"`` (the default): analyse with both
        NESDIS (CHOLMOD's nested dissection: METIS bisections, CAMD on the leaves) and
        AMD and keep the one whose factor costs fewer flops
        (:func:`~pymc_sparse.linalg.cholmod_struct.symbolic_flops`).  The analysis runs
        once per pattern, and every factorisation and selected inversion after it
        follows its flops.  (Below n = 5,000, METIS and AMD are compared, as before.)
        NESDIS wins on large meshes (2-D lattice, n = 10^5: 29% fewer
        flops than AMD; 3-D lattice, n = 97,336: 2.6x fewer), AMD on small ones (2-D
        lattice, n = 1,024: 18% fewer flops).  NESDIS rather than plain METIS: on 2-D
        lattices it has up to 5% more flops than METIS, yet its factorisation and
        selected inversion both ran faster (n = 10^4: 17.1 against 18.2 ms for the two;
        n = 10^5: 250 against 264 ms), and on 3-D lattices it has as few or fewer flops
        (n = 10,648: 1.6x fewer).  AMD's analysis adds about a tenth to NESDIS's.
    symbolic_maxsize : int
        Number of symbolic analyses kept (least recently used dropped).  One analysis
        holds the ordering, the supernodal plan and the position maps: about 0.4 MB at
        n = 2,500, of order ``nnz(L)`` integers in general, so 16 bounds a long session
        that rebuilds models while keeping every pattern of a typical model warm.
    """

    def __init__(self, maxsize: int = 8, ordering: str = "auto", symbolic_maxsize: int = 16):
        if maxsize < 1 or symbolic_maxsize < 1:
            raise ValueError("maxsize and symbolic_maxsize must be at least 1.")
        self.maxsize = int(maxsize)
        self.symbolic_maxsize = int(symbolic_maxsize)
        self.ordering = ordering
        self._lock = threading.Lock()
        self._reset_state()
        os.register_at_fork(after_in_child=self._after_fork)

    def _reset_state(self):
        self._symbolic: OrderedDict[bytes, _Symbolic] = OrderedDict()
        self._numeric: OrderedDict[tuple[bytes, bytes], Factor] = OrderedDict()
        self._inflight: dict[object, threading.Event] = {}
        self._stats = {"symbolic": 0, "numeric": 0, "hits": 0, "misses": 0, "failed": 0}
        self._stats["singular"] = 0

    def _after_fork(self):
        # A lock held by another thread at fork time would never be released in the child.
        self._lock = threading.Lock()
        self._reset_state()

    # -- public -------------------------------------------------------------------
    def info(self) -> dict:
        """Counts of symbolic analyses, numeric factorisations, cache hits and misses."""
        with self._lock:
            d = dict(self._stats)
            d["cached_factors"] = len(self._numeric)
            d["cached_patterns"] = len(self._symbolic)
            d["maxsize"] = self.maxsize
            d["symbolic_maxsize"] = self.symbolic_maxsize
            return d

    def clear(self) -> None:
        """Drop every factor and analysis and reset the counters."""
        with self._lock:
            self._reset_state()

    def factor(self, pattern: SparsityPattern, data) -> Factor:
        """Return the (possibly failed) factor of the matrix with these pattern and values."""
        data = np.ascontiguousarray(data, dtype=np.float64)
        if data.shape != (pattern.nnz,):
            raise ValueError(
                f"Values vector has shape {data.shape} but {pattern!r} needs ({pattern.nnz},)."
            )
        with self._lock:
            sym = self._symbolic.get(pattern.key)
        last = sym.last() if sym is not None and sym.last is not None else None
        if last is not None and np.array_equal(last._data, data):
            with self._lock:
                self._stats["hits"] += 1
            return last
        data = data.copy()  # kept on the factor; the caller may change its array
        key = (pattern.key, _digest(data))

        def build():
            f = self._factorize(pattern, data)
            f._data = data
            return f

        f = self._once(self._numeric, key, self.maxsize, build, "numeric")
        if f._data is not data and not np.array_equal(f._data, data):
            f = build()  # pragma: no cover - two value vectors with one 64-bit fingerprint
        f.symbolic.last = weakref.ref(f)
        return f

    # -- internals ------------------------------------------------------------------
    def _once(self, table: OrderedDict, key, maxsize: int, build, counter: str):
        """Return ``table[key]``, building it once however many threads ask at once.

        The first thread to miss builds it outside the lock; the others wait on its event
        and then read the table (or build it themselves if the build raised).
        """
        while True:
            with self._lock:
                value = table.get(key)
                if value is not None:
                    table.move_to_end(key)
                    if counter == "numeric":
                        self._stats["hits"] += 1
                    return value
                ev = self._inflight.get((counter, key))
                if ev is None:
                    ev = threading.Event()
                    self._inflight[(counter, key)] = ev
                    if counter == "numeric":
                        self._stats["misses"] += 1
                    break
            ev.wait()
        try:
            value = build()
            with self._lock:
                self._stats[counter] += 1
                table[key] = value
                while len(table) > maxsize:
                    table.popitem(last=False)
            return value
        finally:
            with self._lock:
                self._inflight.pop((counter, key), None)
            ev.set()

    def _symbolic_for(self, pattern: SparsityPattern) -> _Symbolic:
        if not pattern.has_full_diagonal:
            raise ValueError(
                f"{pattern!r} lacks some diagonal entries; a Cholesky factor needs all of "
                "them (store explicit zeros)."
            )

        def analyse():
            A = pattern.lower_csc(np.ones(pattern.nnz))
            orderings = (self.ordering,)
            if self.ordering == "auto":
                # NESDIS's gain was measured on large meshes; on small graphs it ties
                # with AMD and its different rounding near singular values broke the
                # certified table of a 28-node disconnected graph (>200 pieces).
                orderings = ("nesdis", "amd") if pattern.n >= _NESDIS_MIN_N else ("metis", "amd")
            best = None
            for ordering in orderings:
                try:
                    analysis = _cholmod.analyze(A, ordering_method=ordering)
                except _cholmod.CholmodError:
                    if ordering != "nesdis" or self.ordering != "auto":
                        raise
                    continue  # a CHOLMOD built without its partition module: AMD alone
                flops = symbolic_flops(analysis, pattern.n)
                if best is None or (flops is not None and flops < best[0]):
                    best = (np.inf if flops is None else flops, ordering, analysis)
            _flops, ordering, analysis = best
            perm = np.asarray(analysis.P())
            return _Symbolic(analysis, threading.RLock(), perm, pattern.diag_index[perm], ordering)

        # The symbolic dict of this call is the one of this state (clear() swaps it).
        return self._once(self._symbolic, pattern.key, self.symbolic_maxsize, analyse, "symbolic")

    def _factorize(self, pattern: SparsityPattern, data: np.ndarray) -> Factor:
        sym = self._symbolic_for(pattern)
        if not np.all(np.isfinite(data)):
            return self._failed(Factor(pattern, sym, None, ok=False))
        with sym.lock:
            if sym.A is None:
                sym.A = pattern.lower_csc(data.copy())
            A = sym.A
            A.data[:] = data
            chol = sym.analysis.copy()
            try:
                NUMERIC_THREADS.run(chol.cholesky_inplace, A)
            except _cholmod.CholmodNotPositiveDefiniteError:
                # The supernodal kernel zeroes the failing supernode, so its pivot is not
                # known here; classify it only if an error is raised (Factor._resolve).
                classify = partial(classify_breakdown, pattern, data.copy(), sym.ordering)
                return self._failed(Factor(pattern, sym, None, False, -1, None, _classify=classify))
            # Pivots read in place (scikit-sparse's D() converts a copy first).
            d, is_ll, nbad, nsus, ld = read_pivots(chol, pattern.n, sym, data, SINGULAR_SCREEN)
            qdiag = data[sym.qdiag] if nbad or nsus else None
            if nbad:  # a negative pivot of L D L' (simplicial): CHOLMOD goes on
                col, singular, r = first_bad_pivot(chol, d, qdiag, sym.perm, pattern, data, True)
                return self._failed(Factor(pattern, sym, None, False, col, singular, r))
            if nsus:
                ratio = d / qdiag
                suspects = np.flatnonzero(ratio <= SINGULAR_SCREEN)
                for j in suspects[np.argsort(ratio[suspects])][:MAX_SUSPECTS]:
                    Ljj = float(np.sqrt(d[j])) if is_ll else 1.0
                    if null_direction_ratio(chol, is_ll, j, Ljj, pattern, data) <= SINGULAR_RTOL:
                        col = int(sym.perm[j])
                        bad = Factor(pattern, sym, None, False, col, True, float(ratio[j]))
                        return self._failed(bad)
        return Factor(pattern, sym, chol, ok=True, _logdet=ld, _pivots=d)

    def _failed(self, f: Factor) -> Factor:
        with self._lock:
            self._stats["failed"] += 1
            self._stats["singular"] += int(bool(f.singular))
        return f


#: The process-wide cache used by every Op.
CACHE = CholeskyCache()


def cache_info() -> dict:
    """Counters of the shared factor cache.

    Returns
    -------
    dict
        ``symbolic`` (analyses run), ``numeric`` (numeric factorisations run), ``hits``,
        ``misses``, ``failed`` (not positive definite or singular), ``singular`` (of
        which singular to working precision), ``cached_factors``, ``cached_patterns``,
        ``maxsize`` and ``symbolic_maxsize``.
    """
    return CACHE.info()


def clear_cache() -> None:
    """Empty the shared factor cache and every other bounded cache; reset the counters."""
    CACHE.clear()
    clear_all()


def cholesky(Q) -> Factor:
    """Factorise a constant symmetric positive-definite matrix, raising on failure.

    Parameters
    ----------
    Q : scipy.sparse matrix or SparseMatrix with constant values
        The full symmetric matrix (for scipy input) or a :class:`SparseMatrix`.

    Returns
    -------
    Factor
        The cached factor; use ``.logdet()``, ``.solve(b)``, ``.selected_inverse()``.

    Raises
    ------
    NotPositiveDefiniteError
        Naming the first column at which the factorisation broke down.
    SingularPrecisionError
        (A subclass of the above.) When ``Q`` is singular to working precision, such as
        the structure matrix of an intrinsic model.
    """
    from pymc_sparse.ops.matrix import as_constant_pattern_data

    pattern, data = as_constant_pattern_data(Q)
    f = CACHE.factor(pattern, data)
    f.raise_if_failed()
    return f
