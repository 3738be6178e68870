#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine: system libraries, virtualenv, package.
#   bash dev.sh setup      install everything (idempotent, quick on re-run)
#   bash dev.sh demo       set up, then fit the Scottish lip cancer BYM2 model
#   bash dev.sh test       set up, then run the default test suite
#   bash dev.sh test-slow  set up, then run the whole suite including slow tests
#   bash dev.sh lint       set up, then ruff check + format check (also run by test)
#   bash dev.sh notebooks  set up (docs extras), then write executed .ipynb for docs/examples
#   bash dev.sh bench      set up (with benchmark extras), then run benchmarks/run_all.py
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
for pkg in libsuitesparse-dev libopenblas0-pthread python3-dev python3-venv gcc g++; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# A Python built outside Debian (pyenv) brings its own headers and venv module.
if "$PY" -c 'import sys; sys.exit(0 if sys.prefix.startswith("/usr") else 1)' 2>/dev/null; then :; else
  need_apt=("${need_apt[@]/python3-dev/}"); need_apt=("${need_apt[@]/python3-venv/}")
fi
need_apt=($(printf '%s\n' "${need_apt[@]}" | grep -v '^$' || true))

setup() {
  if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "[setup] apt-get install ${need_apt[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
      echo "[setup] missing system packages; run as root:" >&2
      echo "  sudo apt-get install -y ${need_apt[*]}" >&2
      exit 1
    fi
  fi
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local extras="$1" stamp="$VENV/.pymc_sparse-$1"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    return 0
  fi
  echo "[setup] installing pymc_sparse[$extras] into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  # scikit-sparse has no wheels: it compiles against Debian's SuiteSparse 5.12 headers,
  # which only the 0.4 series supports, and needs numpy/cython present (no isolation).
  "$VENV/bin/python" -m pip install -q numpy cython
  "$VENV/bin/python" -m pip install -q --no-build-isolation "scikit-sparse>=0.4.12,<0.5"
  "$VENV/bin/python" -m pip install -q -e ".[$extras]"
  touch "$stamp"
}

# The checks of .pre-commit-config.yaml, with the pinned ruff of the test extra.
lint() {
  echo "[lint] ruff check + ruff format --check"
  "$VENV/bin/ruff" check pymc_sparse tests models benchmarks docs
  "$VENV/bin/ruff" format --check -q pymc_sparse tests models benchmarks docs
}

cmd=${1:-test}
case "$cmd" in
  setup) setup "test,jax" ;;
  demo)
    setup "test,jax"
    exec "$VENV/bin/python" -m models.scotland_bym2 ;;
  test)
    setup "test,jax"
    lint
    exec "$VENV/bin/python" -m pytest -n 2 -q ;;
  lint)
    setup "test,jax"
    lint ;;
  test-slow)
    setup "test,jax"
    exec "$VENV/bin/python" -m pytest -n 2 -q --runslow ;;
  bench)
    setup "test,jax,bench"
    exec "$VENV/bin/python" benchmarks/run_all.py "${@:2}" ;;
  notebooks)
    # Executed .ipynb beside each jupytext page (the .py stays the source of truth).
    setup "test,jax,docs"
    pages=("${@:2}"); [ ${#pages[@]} -gt 0 ] || pages=(docs/examples/*.py)
    for page in "${pages[@]}"; do
      case "$page" in *.py) ;; *) page="docs/examples/$page.py" ;; esac
      "$VENV/bin/python" -m jupytext --to ipynb --execute --run-path docs/examples "$page"
    done ;;
  docs)
    setup "test,jax,docs"
    exec "$VENV/bin/python" -m sphinx -b html docs docs/_build/html ;;
  *) echo "usage: bash dev.sh {setup|demo|test|test-slow|lint|bench|docs|notebooks}" >&2; exit 2 ;;
esac
