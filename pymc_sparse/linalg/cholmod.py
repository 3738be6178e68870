"""The one place that talks to CHOLMOD: a shared, cached sparse Cholesky factor.

Every Op of the package (log-determinant, solve, selected inverse, sampling) and every
gradient of them asks :data:`CACHE` for the factor of ``(pattern, values)``:

* the symbolic analysis (fill-reducing ordering and elimination tree) runs once per
  :class:`~pymc_sparse.linalg.pattern.SparsityPattern`;
* the numeric factorisation runs once per distinct value vector, identified by a
  128-bit BLAKE2 digest of its bytes, and is kept in a small LRU;
* derived quantities (log-determinant, the explicit factor ``L``, the selected
  inverse) are computed lazily on the cached entry, so a log-density and its gradient
  at one point share one factorisation.

Failure policy: a matrix that is not positive definite gives a *failed* entry.  The
Ops turn that into NaN (a sampler rejects the point); :func:`cholesky` called by a
user outside a graph raises :class:`NotPositiveDefiniteError` naming the column.
CHOLMOD reports this case in different ways (exception in supernodal mode, NaN or a
warning in simplicial mode, depending on the version); all are normalised here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.lru import clear_all
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.linalg.takahashi import (
    Supernodes,
    logdet_supernodal,
    map_pattern_to_factor,
    map_pattern_to_supernodes,
    supernodal_to_csc,
    supernodal_view_cached,
    takahashi_simplicial,
    takahashi_supernodal,
)

__all__ = [
    "CACHE",
    "CholeskyCache",
    "Factor",
    "NotPositiveDefiniteError",
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


class _NumericThreads:
    """Run CHOLMOD's numeric factorisations in worker threads, never in the caller's.

    Debian's CHOLMOD (SuiteSparse 5) parallelises parts of its supernodal factorisation
    with OpenMP (hard-coded ``num_threads(4)``), and GNU libgomp keeps the thread pool of
    the thread that opened the parallel region.  That pool does not survive ``fork``: a
    forked child (``pm.sample(cores=2)`` forks its chains on Linux) whose thread had used
    it waits forever for pool threads that were not copied.  Measured: a 10^4-node model
    factorised in the parent hung both chains.  ``OMP_THREAD_LIMIT=1`` would avoid the
    pool, but PyTensor loads libgomp before us, after which the variable is ignored.

    Worker threads do not exist in a forked child, so its threads have no pool and
    libgomp makes a fresh one; the executor is recreated after a fork.  The hand-off
    costs tens of microseconds per factorisation.
    """

    _PREFIX = "pymc_sparse-cholmod"

    def __init__(self):
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self._lock = threading.Lock()
        self._pool = None

    def run(self, fn, *args):
        if threading.current_thread().name.startswith(self._PREFIX):
            return fn(*args)
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                # One worker per core: factorisations of different patterns (JAX
                # callbacks, threads of the caller) still run side by side.
                self._pool = ThreadPoolExecutor(
                    max_workers=max(2, os.cpu_count() or 2), thread_name_prefix=self._PREFIX
                )
            pool = self._pool
        return pool.submit(fn, *args).result()


_NUMERIC_THREADS = _NumericThreads()


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """The matrix handed to a Cholesky factorisation is not positive definite."""


def _digest(data: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(data).view(np.uint8), digest_size=16).digest()


@dataclass
class _Symbolic:
    """Symbolic analysis of one pattern, shared by all its numeric factors."""

    analysis: object
    lock: threading.RLock
    perm: np.ndarray
    # Filled by the first numeric factor that extracts L.
    L_indptr: np.ndarray | None = None
    L_indices: np.ndarray | None = None
    q_to_l: np.ndarray | None = None
    # Supernodal factors (read in place, see pymc_sparse.linalg.takahashi): the plan of the
    # selected inversion, and where the entries of Q (q_to_x) and of the CSC form of L
    # (l_to_x) sit in CHOLMOD's supernodal values.  Filled by the first numeric factor.
    supernodes: Supernodes | None = None
    q_to_x: np.ndarray | None = None
    l_to_x: np.ndarray | None = None
    # Work arrays of the supernodal selected inversion, reused across numeric factors.
    selinv_work: list = field(default_factory=list, repr=False)


@dataclass
class Factor:
    """A numeric Cholesky factorisation of ``Q[p][:, p] = L L'`` and what derives from it.

    Instances come from :class:`CholeskyCache`; do not build them directly.  Attribute
    ``ok`` is False when ``Q`` is not positive definite; every accessor then returns
    NaN-filled results instead of raising.
    """

    pattern: SparsityPattern
    symbolic: _Symbolic
    chol: object | None
    ok: bool
    failed_column: int = -1
    _logdet: float = float("nan")
    _L: sp.csc_matrix | None = field(default=None, repr=False)
    _selinv_L: np.ndarray | None = field(default=None, repr=False)
    _selinv_Q: np.ndarray | None = field(default=None, repr=False)

    # -- scalars --------------------------------------------------------------------
    def logdet(self) -> float:
        """:math:`\\log\\det Q = 2\\sum_j \\log L_{jj}`, NaN if not positive definite."""
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

    def L(self) -> sp.csc_matrix:
        """The explicit lower factor ``L`` (permuted order, sorted rows), cached.

        A supernodal factor is read in place and copied out in CSC form, with CHOLMOD's
        pattern (explicit zeros of relaxed supernodes included).
        """
        if self._L is None:
            sym = self.symbolic
            view = supernodal_view_cached(self.chol, self.pattern.n, sym)
            if view is not None:
                plan, x = view
                with sym.lock:
                    if sym.l_to_x is None:
                        sym.L_indptr, sym.L_indices, sym.l_to_x = supernodal_to_csc(plan)
                    ip, ix, to_x = sym.L_indptr, sym.L_indices, sym.l_to_x
                n = self.pattern.n
                L = sp.csc_matrix((x[to_x], ix, ip), shape=(n, n))
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
            sym = self.symbolic
            view = supernodal_view_cached(self.chol, self.pattern.n, sym)
            if view is not None:
                L = self.L()  # also the CSC positions of the supernodal values
                self._selinv_L = takahashi_supernodal(*view)[sym.l_to_x]
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
            view = None
            if self._selinv_L is None:
                view = supernodal_view_cached(self.chol, self.pattern.n, sym)
            if view is not None:
                # Supernodal kernel on CHOLMOD's factor in place; only Q's entries are
                # kept, so the work array goes back to a per-pattern pool (a fresh one
                # costs its page faults again on every call).
                plan, x = view
                with sym.lock:
                    if sym.q_to_x is None:
                        sym.q_to_x = map_pattern_to_supernodes(self.pattern, sym.perm, plan)
                    q_to_x = sym.q_to_x
                    work = sym.selinv_work.pop() if sym.selinv_work else None
                if work is not None and work.size != plan.xsize:
                    work = None
                Z = takahashi_supernodal(plan, x, out=work)
                self._selinv_Q = Z[q_to_x]
                with sym.lock:
                    if len(sym.selinv_work) < 2:
                        sym.selinv_work.append(Z)
                return self._selinv_Q
            L = self.L()
            with sym.lock:
                if (
                    sym.q_to_l is None
                    or sym.L_indptr is None
                    or not np.array_equal(sym.L_indptr, L.indptr)
                ):
                    sym.q_to_l = map_pattern_to_factor(self.pattern, sym.perm, L.indptr, L.indices)
                    sym.L_indptr = L.indptr.copy()
                    sym.L_indices = L.indices.copy()
                q_to_l = sym.q_to_l
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

    def raise_if_failed(self) -> None:
        """Raise :class:`NotPositiveDefiniteError` with the failing column, if any."""
        if not self.ok:
            col = (
                f" (the factorisation broke down at column {self.failed_column} of Q)"
                if self.failed_column >= 0
                else ""
            )
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
        ``"nesdis"``, ``"default"``).  METIS is the default: the analysis runs once per
        pattern and costs more than AMD's (2-D lattice, n = 10^5: 0.43 s against
        0.04 s of CPU), but every factorisation and selected inversion after it is
        cheaper: 31% fewer flops and 19% fewer entries in L on that lattice, 2.5x
        fewer flops and 38% fewer entries on a 3-D lattice with n = 97,336
        (docs/performance/selinv.md).
    """

    def __init__(self, maxsize: int = 8, ordering: str = "metis"):
        self.maxsize = int(maxsize)
        self.ordering = ordering
        self._lock = threading.Lock()
        self._reset_state()
        os.register_at_fork(after_in_child=self._after_fork)

    def _reset_state(self):
        self._symbolic: dict[bytes, _Symbolic] = {}
        self._numeric: OrderedDict[tuple[bytes, bytes], Factor] = OrderedDict()
        self._inflight: dict[tuple[bytes, bytes], threading.Event] = {}
        self._stats = {"symbolic": 0, "numeric": 0, "hits": 0, "misses": 0, "failed": 0}

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
            return d

    def clear(self) -> None:
        """Drop every factor and analysis and reset the counters."""
        with self._lock:
            self._reset_state()

    def factor(self, pattern: SparsityPattern, data) -> Factor:
        """The (possibly failed) factor of the matrix with these pattern and values."""
        data = np.ascontiguousarray(data, dtype=np.float64)
        if data.shape != (pattern.nnz,):
            raise ValueError(
                f"Values vector has shape {data.shape} but {pattern!r} needs ({pattern.nnz},)."
            )
        key = (pattern.key, _digest(data))
        while True:
            with self._lock:
                f = self._numeric.get(key)
                if f is not None:
                    self._numeric.move_to_end(key)
                    self._stats["hits"] += 1
                    return f
                ev = self._inflight.get(key)
                if ev is None:
                    ev = threading.Event()
                    self._inflight[key] = ev
                    self._stats["misses"] += 1
                    break
            # Another thread is factorising these very values: wait and reuse its result.
            ev.wait()
        try:
            f = self._factorize(pattern, data)
            with self._lock:
                self._numeric[key] = f
                while len(self._numeric) > self.maxsize:
                    self._numeric.popitem(last=False)
            return f
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            ev.set()

    # -- internals ------------------------------------------------------------------
    def _symbolic_for(self, pattern: SparsityPattern) -> _Symbolic:
        with self._lock:
            s = self._symbolic.get(pattern.key)
        if s is not None:
            return s
        if not pattern.has_full_diagonal:
            raise ValueError(
                f"{pattern!r} lacks some diagonal entries; a Cholesky factor needs all of "
                "them (store explicit zeros)."
            )
        A = pattern.lower_csc(np.ones(pattern.nnz))
        analysis = _cholmod.analyze(A, ordering_method=self.ordering)
        s = _Symbolic(analysis=analysis, lock=threading.RLock(), perm=np.asarray(analysis.P()))
        with self._lock:
            s = self._symbolic.setdefault(pattern.key, s)
            self._stats["symbolic"] += 1
        return s

    def _factorize(self, pattern: SparsityPattern, data: np.ndarray) -> Factor:
        sym = self._symbolic_for(pattern)
        with self._lock:
            self._stats["numeric"] += 1
        if not np.all(np.isfinite(data)):
            with self._lock:
                self._stats["failed"] += 1
            return Factor(pattern, sym, None, ok=False)
        A = pattern.lower_csc(data)
        with sym.lock:
            chol = sym.analysis.copy()
            try:
                _NUMERIC_THREADS.run(chol.cholesky_inplace, A)
                # A not-PD simplicial factor can report log of a negative pivot: NaN, quietly.
                # Read the diagonal of the supernodal blocks in place when we can: scikit-
                # sparse's logdet() converts a copy of the factor first (0.1 s at n = 10^6).
                view = supernodal_view_cached(chol, pattern.n, sym)
                with np.errstate(invalid="ignore", divide="ignore"):
                    ld = logdet_supernodal(*view) if view is not None else float(chol.logdet())
                ok = np.isfinite(ld)
            except _cholmod.CholmodNotPositiveDefiniteError:
                ok, ld = False, float("nan")
            failed_column = -1
            if not ok:
                failed_column = self._failed_column(chol, sym.perm)
        if not ok:
            with self._lock:
                self._stats["failed"] += 1
            return Factor(pattern, sym, None, ok=False, failed_column=failed_column)
        return Factor(pattern, sym, chol, ok=True, _logdet=ld)

    @staticmethod
    def _failed_column(chol, perm) -> int:
        # CHOLMOD leaves the columns before the failing pivot valid; the first diagonal
        # entry that is not a positive finite number is the failing (permuted) column.
        try:
            d = np.asarray(chol.D())
        except Exception:
            return -1
        bad = np.flatnonzero(~(d > 0) | ~np.isfinite(d))
        return int(perm[bad[0]]) if bad.size else -1


#: The process-wide cache used by every Op.
CACHE = CholeskyCache()


def cache_info() -> dict:
    """Counters of the shared factor cache.

    Returns
    -------
    dict
        ``symbolic`` (analyses run), ``numeric`` (numeric factorisations run), ``hits``,
        ``misses``, ``failed`` (not positive definite), ``cached_factors``,
        ``cached_patterns`` and ``maxsize``.
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
    """
    from pymc_sparse.ops.matrix import as_constant_pattern_data

    pattern, data = as_constant_pattern_data(Q)
    f = CACHE.factor(pattern, data)
    f.raise_if_failed()
    return f
