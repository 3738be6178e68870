r"""A pool of forked worker processes that inherit a state object instead of pickling it.

Used where independent evaluations of something expensive to rebuild run side by side:
the exact samples of a certified log-determinant table
(:mod:`pymc_sparse.logdet1d.exact`) and the log densities of
:func:`~pymc_sparse.sample_imh` (compiled PyTensor functions, which do not pickle).
CHOLMOD holds the GIL, so threads would not run in parallel; with ``fork`` each worker
starts from a copy of the parent's memory (the state needs no pickling), and reaches
CHOLMOD through the fork-safe path of :mod:`pymc_sparse.linalg.threads`.

Where ``fork`` is unavailable (not Linux/macOS), in a daemon process, or when starting or
running the pool fails (a worker killed, out of memory), :meth:`ForkPool.map` returns
``None`` and the caller evaluates in its own process; a failure is reported once as a
``RuntimeWarning``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import warnings

__all__ = ["ForkPool", "default_workers"]

_STATE = None  # the pool's state object, set in each forked worker


def default_workers() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker(state):
    global _STATE
    _STATE = state
    # Ctrl-C goes to the whole process group: the parent handles it and shuts the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # If the parent dies without shutting the pool down, take the worker with it
    # (Linux; elsewhere the worker exits when its task pipe closes).
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    # One BLAS/OpenMP thread per worker: the workers already fill the cores.
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def _call(fn, item):
    return fn(_STATE, item)


class ForkPool:
    """Forked worker processes sharing one inherited ``state``.

    Parameters
    ----------
    workers : int
        Processes to start (on the first :meth:`map`); 1 means never start any.
    state : object
        Inherited by every worker at the fork (not pickled); tasks receive it.
    what : str
        What the pool computes, for the warning if it fails.

    Notes
    -----
    Use it as a context manager: the processes are joined on exit, also when the caller
    raises.  Tasks are module-level functions ``fn(state, item)`` (pickled by name).
    """

    def __init__(self, workers: int, state, what: str):
        if int(workers) < 1:
            raise ValueError(f"`workers` must be a positive integer, got {workers!r}.")
        self.workers = int(workers)
        self.state = state
        self.what = what
        self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Shut the worker pool down and wait for its processes to exit."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn, items) -> list | None:
        """``[fn(state, item) for item in items]`` in the workers, or ``None`` (see module)."""
        from concurrent.futures.process import BrokenProcessPool

        items = list(items)
        if self.workers < 2 or len(items) < 2:
            return None
        try:
            if self._pool is None:
                self._pool = self._start()
            if self._pool is None:
                return None
            with warnings.catch_warnings():
                # Python >= 3.12 warns that fork() in a multi-threaded process may
                # deadlock (the pool forks on its first tasks); the children reach
                # CHOLMOD only through the fork-safe path of pymc_sparse.linalg.threads.
                warnings.simplefilter("ignore", DeprecationWarning)
                # JAX warns the same from a fork hook once its backend is up; the
                # workers never call JAX.
                warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
                return list(self._pool.map(_call, [fn] * len(items), items))
        except (BrokenProcessPool, OSError) as err:
            warnings.warn(
                f"Parallel {self.what} failed ({err!r}); continuing in one process.",
                RuntimeWarning,
                stacklevel=3,
            )
            self.close()
            self.workers = 1
            return None

    def _start(self):
        from concurrent.futures import ProcessPoolExecutor

        if "fork" not in multiprocessing.get_all_start_methods():
            self.workers = 1
            return None
        if multiprocessing.current_process().daemon:  # a daemon cannot have children
            self.workers = 1
            return None
        # With fork the initializer's arguments are inherited, not pickled.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(self.state,),
        )
