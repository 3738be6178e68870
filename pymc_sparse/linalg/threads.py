"""Fork safety of CHOLMOD's numeric factorisation, paid only in a forked child.

CHOLMOD (through OpenBLAS/OpenMP) can hang in a child process forked while its thread
pools were live in the parent (``pm.sample(cores=2)`` with the fork context).  Running the
factorisation on a fresh worker thread avoids that, but costs a hand-off on every
factorisation; ``os.register_at_fork`` marks a forked child, and only there is the
hand-off taken.
"""

from __future__ import annotations

import os
import threading

__all__ = ["NUMERIC_THREADS"]


class _NumericThreads:
    """Run CHOLMOD's numeric factorisations in worker threads once the process has forked.

    Debian's CHOLMOD (SuiteSparse 5) parallelises parts of its supernodal factorisation
    with OpenMP (hard-coded ``num_threads(4)``), and GNU libgomp keeps the thread pool of
    the thread that opened the parallel region.  That pool does not survive ``fork``: a
    forked child (``pm.sample(cores=2)`` forks its chains on Linux) whose thread had used
    it waits forever for pool threads that were not copied.  Measured: a 10^4-node model
    factorised in the parent hung both chains.  ``OMP_THREAD_LIMIT=1`` would avoid the
    pool, but PyTensor loads libgomp before us, after which the variable is ignored.

    A process that has not forked calls CHOLMOD directly.  ``os.register_at_fork`` marks
    a child; from then on its factorisations run in worker threads, which did not exist
    at the fork and so get a fresh libgomp pool.  The hand-off costs tens of microseconds
    (about 10% of a factorisation at n = 1,024), now paid only by forked children.
    """

    _PREFIX = "pymc_sparse-cholmod"

    def __init__(self):
        self.forked = False
        self._reset()
        os.register_at_fork(after_in_child=self._after_fork)

    def _reset(self):
        self._lock = threading.Lock()
        self._pool = None

    def _after_fork(self):
        self.forked = True
        self._reset()

    def run(self, fn, *args):
        if not self.forked or threading.current_thread().name.startswith(self._PREFIX):
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


NUMERIC_THREADS = _NumericThreads()
