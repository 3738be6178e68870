"""What the executed example pages in ``docs/examples/`` share.

The docs build runs each page in full; the test suite runs them with
``PYMC_SPARSE_EXAMPLES_QUICK=1`` as smoke tests with fewer draws.
"""

from __future__ import annotations

import os

#: Whether the example pages run in quick (smoke-test) mode.
QUICK = os.environ.get("PYMC_SPARSE_EXAMPLES_QUICK") == "1"


def sampling_budget(quick: tuple[int, int, int], full: tuple[int, int, int]):
    """``(draws, tune, chains)`` of a page: ``full`` normally, ``quick`` in quick mode.

    In quick mode it prints a line saying so (the example tests require it), so that a
    reader of a quick run's output does not take it for inference.
    """
    draws, tune, chains = quick if QUICK else full
    if QUICK:
        fd, ft, fc = full
        print(
            f"QUICK MODE (PYMC_SPARSE_EXAMPLES_QUICK=1): {chains} chain{'s' * (chains > 1)} x "
            f"({tune} tune + {draws} draws) instead of {fc} x ({ft} + {fd}); a smoke test, "
            "not inference."
        )
    return draws, tune, chains
