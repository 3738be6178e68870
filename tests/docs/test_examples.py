"""Every example page in ``docs/examples/`` runs, in quick mode, as a plain script.

The pages are jupytext percent files, i.e. valid Python: each one runs here in a fresh
subprocess with ``PYMC_SPARSE_EXAMPLES_QUICK=1`` (the page then uses fewer draws, and
says so in its output) and the non-interactive matplotlib backend.  A cell that raises,
including the numerical checks the pages assert, fails the test with the end of the
script's stderr.  The full runs are what the documentation build executes
(``bash dev.sh docs``); a single page runs in full with
``PYTHONPATH=. python docs/examples/<name>.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
# Pages that take more than about a minute in quick mode (measured on the 2-core
# development machine) run only with --runslow: the two PyMC notebook ports fit the PyMC
# original and ours side by side and took 3-5 min each, mostly compiling pm.CAR/pm.ICAR;
# spde fits the SPDE next to pm.gp.Marginal (about 1 min of CPU).
SLOW: set[str] = {"pymc_car_scotland", "pymc_nyc_bym", "spde"}
TIMEOUT_S = 900


def _params():
    for path in EXAMPLES:
        marks = [pytest.mark.slow] if path.stem in SLOW else []
        yield pytest.param(path, id=path.stem, marks=marks)


def test_examples_found():
    # A renamed folder must not turn this module into zero passing tests.
    assert len(EXAMPLES) >= 3, f"no example pages found under {ROOT / 'docs' / 'examples'}"


@pytest.mark.parametrize("path", list(_params()))
def test_example_runs_in_quick_mode(path, tmp_path):
    env = dict(os.environ)
    env.update(
        PYMC_SPARSE_EXAMPLES_QUICK="1",
        MPLBACKEND="Agg",
        # `models` (the example data and models) is imported from the repository root.
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-3000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        pytest.fail(f"{path.name} did not finish within {TIMEOUT_S} s.\nstderr tail:\n{tail}")
    if proc.returncode != 0:
        pytest.fail(
            f"{path.name} exited with status {proc.returncode}.\n"
            f"stdout tail:\n{proc.stdout[-2000:]}\nstderr tail:\n{proc.stderr[-4000:]}"
        )
    # Every page announces the mode it ran in, so a reader of CI logs (and of the page)
    # knows when the numbers come from a reduced run.
    assert "QUICK MODE" in proc.stdout, f"{path.name} does not print that it ran in quick mode"
