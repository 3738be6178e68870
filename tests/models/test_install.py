"""``pip install`` of a fresh copy of the repository into an environment that has PyMC.

What ``docs/install.md`` promises a PyMC user: the package installs into the environment
they already have without replacing its PyMC/PyTensor/NumPy, imports from any directory,
and the example pages find ``models/`` from any directory.  The test copies the files git
would commit (tracked and untracked-but-not-ignored, so that it checks the working tree,
not the last commit) to a temporary directory, creates a new virtualenv that sees the
running environment's packages (a ``.pth`` file: the "existing environment"), asks pip what
it would install, installs, and runs the package and an example import from elsewhere.
Offline: the build uses the environment's setuptools (``--no-build-isolation``).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(cmd, cwd, timeout=600):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{cmd}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def _fresh_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
    return dest


def test_pip_install_into_existing_environment(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the repository's files")
    clone = _fresh_copy(tmp_path / "clone")
    env = tmp_path / "env"
    # --without-pip: the venv's bundled pip/setuptools would shadow the environment's; an
    # old setuptools (< 77) cannot read pyproject's SPDX `license` string.
    _run([sys.executable, "-m", "venv", "--without-pip", env], cwd=tmp_path)
    py = env / "bin" / "python"
    # The "existing environment": the new venv sees the running one's packages (PyMC,
    # PyTensor, scikit-sparse, setuptools), as a conda env or venv with PyMC would.
    env_site = Path(
        _run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path
        ).strip()
    )
    (env_site / "existing_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    # 1. pip would install nothing but pymc-sparse: the environment's PyMC etc. are kept.
    report = tmp_path / "report.json"
    _run(
        [
            py,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-build-isolation",
            "--no-index",
            "--report",
            report,
            clone,
        ],
        cwd=tmp_path,
    )
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert names <= {"pymc-sparse", "pymc_sparse"}, names

    # 2. Install it into the new environment only (never touching the running one).
    _run(
        [
            py,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--ignore-installed",
            "--no-build-isolation",
            "--no-index",
            clone,
        ],
        cwd=tmp_path,
    )

    # 3. Import and use it from another directory: the installed copy, not the repository.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run(
        [
            py,
            "-c",
            "import numpy as np, pymc as pm, pymc_sparse as pms\n"
            "W = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])\n"
            "x = np.array([0.3, -0.1, 0.2])\n"
            "print(pms.__file__)\n"
            "print(float(pm.logp(pms.CAR.dist(mu=0.0, W=W, alpha=0.5, tau=2.0), x).eval()))",
        ],
        cwd=elsewhere,
    ).splitlines()
    assert out[0].startswith(str(env)), out[0]
    Q = 2.0 * (np.diag([1.0, 2.0, 1.0]) - 0.5 * np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]))
    x = np.array([0.3, -0.1, 0.2])
    expected = 0.5 * np.linalg.slogdet(Q)[1] - 0.5 * x @ Q @ x - 1.5 * np.log(2 * np.pi)
    assert abs(float(out[1]) - expected) < 1e-10

    # 4. An example page finds `models/` from any directory (docs/examples/_repo).
    out = _run(
        [
            py,
            "-c",
            f"import sys; sys.path.insert(0, {str(clone / 'docs' / 'examples')!r})\n"
            "import _repo, models._data\n"
            "print(models._data.__file__, models._data.load_scotland()['n'])",
        ],
        cwd=elsewhere,
    )
    path, n = out.split()
    assert path.startswith(str(clone)) and n == "56"
