r"""Benchmarks against the peers users would pick instead, in one reproducible run.

Documented command (from the repository root)::

    bash dev.sh bench                   # = .venv/bin/python benchmarks/run_all.py
    bash dev.sh bench --quick           # smaller sampling runs (300 tune + 300 draws)
    bash dev.sh bench --max-n 100000 --cap-seconds 60 --cap-gb 4

Every configuration runs in its own process (``benchmarks/peers.py``) under a wall-clock
cap (``--cap-seconds``); its peak resident memory is read from ``os.wait4``'s
``ru_maxrss``.  A configuration that would need a dense ``n x n`` matrix larger than
``--cap-gb`` is reported as over cap without running; one whose time predicted from the
previous size (exponent 3 for the dense peers, 1.5 for the sparse ones) exceeds twice the
cap is reported as over cap (predicted) without running.

Writes ``docs/performance/peers.csv``, ``peers_e2e.csv``, ``peers_eval.png``,
``peers_setup.png`` and the Markdown tables
``peers_eval_tables.md`` and ``peers_e2e_tables.md``, which ``peers.md`` quotes).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "performance"
WORKER = ROOT / "benchmarks" / "peers.py"

EVAL_SYSTEMS = [
    "ours",
    "ours_jax",
    "ours_interp",
    "ours_interp_jax",
    "sparsax",
    "pm_car",
    "pm_mvnormal",
    "numpyro_car",
    "numpyro_car_sparse",
]
LABEL = {
    "ours": "ours CAR logdet='exact' (PyTensor C)",
    "ours_jax": "ours CAR logdet='exact' (JAX)",
    "ours_interp": "ours CAR logdet='interpolated' (PyTensor C)",
    "ours_interp_jax": "ours CAR logdet='interpolated' (JAX)",
    "ours_numpyro": "ours CAR logdet='exact', numpyro NUTS",
    "sparsax": "sparsax logdet + jnp quad form",
    "pm_car": "pm.CAR",
    "pm_mvnormal": "pm.MvNormal(tau=Q), dense",
    "numpyro_car": "numpyro CAR (dense)",
    "numpyro_car_sparse": "numpyro CAR (is_sparse=True)",
    "pm_icar": "pm.ICAR-based BYM2",
}
# Memory that a system must hold as dense n x n float64 arrays (eigvalsh / Cholesky input).
DENSE = {"pm_car", "pm_mvnormal", "numpyro_car", "numpyro_car_sparse"}
EXPONENT_GUESS = {s: (3.0 if s in DENSE else 1.5) for s in EVAL_SYSTEMS}
E2E_SYSTEMS = ["ours", "ours_interp", "ours_numpyro", "pm_car", "numpyro_car_sparse"]


def worker_env() -> dict:
    """Environment of a worker: one BLAS/OpenMP thread unless ``--threads`` says otherwise.

    On a shared, oversubscribed machine a multi-threaded BLAS that spins waiting for a
    descheduled partner thread can make one factorisation 10-20x slower; one thread per
    process gives repeatable numbers (and is how the 2 chains of a laptop would run).
    """
    env = dict(os.environ)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(THREADS)
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    return env


THREADS = 1


def run_worker(task: dict, cap: float) -> dict:
    """Run one configuration in a subprocess; result dict with status, peak RSS and wall."""
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(task)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=worker_env(),
        )
        killed = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > cap and not killed:
                p.kill()
                killed = True
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        log.seek(0)
        text = log.read()
    res = {"peak_rss_gb": ru.ru_maxrss / 2**20, "process_wall_s": wall}
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if killed:
        phases = [ln[6:] for ln in text.splitlines() if ln.startswith("PHASE ")]
        where = f", stopped at: {phases[-1]}" if phases else ""
        res["status"] = f"over cap (> {cap:.0f} s{where})"
    elif p.returncode != 0 or not lines:
        tail = " | ".join(text.strip().splitlines()[-3:])[-300:]
        res["status"] = f"error: {tail}"
    else:
        res.update(json.loads(lines[-1][7:]))
        res["status"] = "ok"
    return res


def fit_exponent(ns, ts) -> float | None:
    """Least-squares slope of log t against log n (None with fewer than two points)."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(ns, ts, strict=True) if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def eval_benchmarks(args) -> list[dict]:
    sizes = [n for n in (1024, 10_000, 100_489, 1_000_000) if n <= args.max_n]
    rows = []
    for system in args.systems:
        last = None
        for n in sizes:
            row = {"system": system, "n": n}
            dense_gb = n * n * 8 / 1e9
            if system in DENSE and dense_gb > args.cap_gb:
                row["status"] = f"over cap (dense n x n = {dense_gb:.1f} GB)"
            elif last is not None and last["status"] != "ok":
                row["status"] = f"over cap (smaller n was: {last['status']})"
            elif last is not None:
                k = EXPONENT_GUESS[system]
                pred = 3 * last["eval_min_s"] * (n / last["n"]) ** k
                if pred > 2 * args.cap_seconds:
                    row["status"] = f"over cap (predicted {pred:.0f} s from n^{k:g})"
            if "status" not in row:
                task = {"kind": "eval", "system": system, "n": n, "budget": args.cap_seconds}
                row.update(run_worker(task, args.cap_seconds))
            print(f"[eval] {system:20s} n={n:>8d}  {_fmt_eval(row)}", flush=True)
            rows.append(row)
            last = row
    return rows


def _fmt_eval(r):
    if r.get("status") != "ok":
        return r.get("status", "")
    return (
        f"eval {1e3 * r['eval_min_s']:.3g} ms (min of {r['repeats']}), setup "
        f"{r['setup_s']:.1f} s (build {r['build_s']:.1f} + compile {r['compile_s']:.1f} "
        f"+ first {r['first_eval_s']:.2f}), peak RSS {r['peak_rss_gb']:.2f} GB"
    )


def e2e_benchmarks(args) -> list[dict]:
    rows = []
    sizes = [n for n in (1024, 10_000, 100_489) if n <= min(args.max_n, args.e2e_max_n)]
    for n in sizes:
        for system in args.e2e_systems:
            row = {"model": f"CAR n={n}", "system": system, "n": n}
            if system in DENSE and n * n * 8 / 1e9 > args.cap_gb:
                row["status"] = f"over cap (dense n x n = {n * n * 8 / 1e9:.1f} GB)"
            elif system in DENSE and n > 10_000:
                row["status"] = "not run (dense eigendecomposition, see per-evaluation table)"
            elif system not in ("ours", "ours_interp", "pm_car", "numpyro_car_sparse") and (
                n > 1024 and not args.e2e_peers_large
            ):
                row["status"] = "not run (time; --e2e-peers-large runs it)"
            elif not system.startswith("ours") and n > 10_000:
                row["status"] = "not run (dense eigendecomposition of n x n at set-up)"
            else:
                task = {
                    "kind": "e2e",
                    "system": system,
                    "n": n,
                    "tune": args.tune,
                    "draws": args.draws,
                    "chains": 2,
                }
                row.update(run_worker(task, args.e2e_cap_seconds))
            print(f"[e2e] {system:20s} n={n:>8d}  {_fmt_e2e(row)}", flush=True)
            rows.append(row)
    for system in ("ours", "pm_icar"):
        row = {"model": "Scotland BYM2", "system": system, "n": 56}
        task = {
            "kind": "bym2",
            "system": system,
            "tune": args.tune,
            "draws": args.draws,
            "chains": 2,
        }
        row.update(run_worker(task, args.e2e_cap_seconds))
        print(f"[e2e] BYM2 {system:15s}  {_fmt_e2e(row)}", flush=True)
        rows.append(row)
    agreement(rows)
    return rows


def _fmt_e2e(r):
    if r.get("status") != "ok":
        return r.get("status", "")
    ess = ", ".join(f"{k} {v['ess_per_s']:.2g}" for k, v in r["params"].items())
    return f"{r['wall_s']:.1f} s, ESS/s: {ess}; peak RSS {r['peak_rss_gb']:.2f} GB"


def agreement(rows):
    """Max |mean - mean_ref| / sd_ref over the parameters, against ours per model.

    The reference is ours with the exact log-determinant where it ran, else ours with the
    interpolated one (a run restricted with ``--e2e-systems`` may have only that).
    """
    refs = {}
    for pref in ("ours_interp", "ours"):  # later wins: exact preferred
        refs.update(
            {r["model"]: r for r in rows if r["system"] == pref and r.get("status") == "ok"}
        )
    for r in rows:
        ref = refs.get(r["model"])
        if r.get("status") != "ok" or ref is None:
            continue
        r["max_mean_diff_sd"] = max(
            abs(v["mean"] - ref["params"][k]["mean"]) / ref["params"][k]["sd"]
            for k, v in r["params"].items()
        )
        print(
            f"[agree] {r['model']:14s} {r['system']:20s} max |mean - ours| = "
            f"{r['max_mean_diff_sd']:.3f} posterior sd",
            flush=True,
        )


# ------------------------------------------------------------------------------- output
def write_csv(eval_rows, e2e_rows):
    OUT.mkdir(parents=True, exist_ok=True)
    if eval_rows:
        _write_eval_csv(eval_rows)
    if e2e_rows:
        _write_e2e_csv(e2e_rows)


def _write_eval_csv(eval_rows):
    cols = [
        "system",
        "n",
        "status",
        "eval_min_s",
        "eval_median_s",
        "repeats",
        "build_s",
        "compile_s",
        "first_eval_s",
        "setup_s",
        "peak_rss_gb",
    ]
    with open(OUT / "peers.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(eval_rows)


def _write_e2e_csv(e2e_rows):
    cols = [
        "model",
        "system",
        "n",
        "status",
        "tune",
        "draws",
        "chains",
        "wall_s",
        "divergences",
        "max_mean_diff_sd",
        "peak_rss_gb",
        "param",
        "mean",
        "sd",
        "ess_bulk",
        "ess_per_s",
    ]
    with open(OUT / "peers_e2e.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in e2e_rows:
            for k, v in (r.get("params") or {"": {}}).items():
                w.writerow({**r, "param": k, **v})


def plots(eval_rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, fname, title in (
        ("eval_min_s", "peers_eval.png", "one log-density + gradient (min over repeats)"),
        ("setup_s", "peers_setup.png", "set-up: graph + compile + first evaluation"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for s in dict.fromkeys(r["system"] for r in eval_rows):
            pts = [
                (r["n"], r[key]) for r in eval_rows if r["system"] == s and r.get("status") == "ok"
            ]
            if pts:
                ns, ts = zip(*pts, strict=True)
                ax.loglog(
                    ns, ts, "o-", label=LABEL.get(s, s), ls="-" if s.startswith("ours") else "--"
                )
        ax.set_xlabel("n (2-D rook lattice)")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(OUT / fname, dpi=110)
        plt.close(fig)


def tables(eval_rows, e2e_rows, args, exps) -> str:
    lines = [
        "## Per-evaluation and set-up cost (proper CAR prior, unknown alpha and tau)",
        "",
        "| system | n | logp+grad (ms, min) | set-up (s) = build + compile + first eval "
        "| peak RSS (GB) |",
        "|---|---:|---:|---|---:|",
    ]
    for r in eval_rows:
        if r.get("status") == "ok":
            lines.append(
                f"| {LABEL[r['system']]} | {r['n']:,} | {1e3 * r['eval_min_s']:.3g} | "
                f"{r['setup_s']:.1f} = {r['build_s']:.1f} + {r['compile_s']:.1f} + "
                f"{r['first_eval_s']:.2f} | {r['peak_rss_gb']:.2f} |"
            )
        else:
            lines.append(f"| {LABEL[r['system']]} | {r['n']:,} | {r['status']} | | |")
    lines += [
        "",
        "Empirical scaling exponent p of the per-evaluation time, t ~ n^p "
        "(least squares over the measured sizes):",
        "",
        "| system | p (eval) | sizes used |",
        "|---|---:|---|",
    ]
    for s, (p, ns) in exps.items():
        lines.append(
            f"| {LABEL[s]} | {'n/a' if p is None else f'{p:.2f}'} | "
            f"{', '.join(f'{n:,}' for n in ns) or '-'} |"
        )
    eval_md = "\n".join(lines) + "\n"
    lines = [
        "",
        f"## End-to-end: 2 chains x ({args.tune} tune + {args.draws} draws), "
        "time includes model build and compile",
        "",
        "| model | system | wall (s) | bulk ESS/s (per parameter) | max mean diff "
        "vs ours (post. sd) | divergences | peak RSS (GB) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in e2e_rows:
        if r.get("status") == "ok":
            ess = ", ".join(f"{k} {v['ess_per_s']:.3g}" for k, v in r["params"].items())
            diff = r.get("max_mean_diff_sd")
            label = (
                "ours BYM2"
                if r["model"].endswith("BYM2") and r["system"] == "ours"
                else (LABEL[r["system"]])
            )
            lines.append(
                f"| {r['model']} | {label} | {r['wall_s']:.1f} | {ess} | "
                f"{'-' if diff is None else f'{diff:.2f}'} | {r['divergences']} | "
                f"{r['peak_rss_gb']:.2f} |"
            )
        else:
            lines.append(f"| {r['model']} | {LABEL[r['system']]} | {r['status']} | | | | |")
    return eval_md, "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="300 tune + 300 draws instead of 1000 + 1000 for the sampling runs",
    )
    p.add_argument("--max-n", type=float, default=1e6, help="largest lattice size (default 1e6)")
    p.add_argument(
        "--cap-seconds",
        type=float,
        default=60.0,
        help="wall-clock cap of one per-evaluation configuration (default 60)",
    )
    p.add_argument(
        "--cap-gb",
        type=float,
        default=4.0,
        help="memory cap: dense n x n float64 above this is not run (default 4)",
    )
    p.add_argument(
        "--e2e-max-n",
        type=float,
        default=1e4,
        help="largest n for the sampling runs (default 1e4; 1e5 is ours only)",
    )
    p.add_argument(
        "--e2e-cap-seconds",
        type=float,
        default=300.0,
        help="wall-clock cap of one sampling run (default 300)",
    )
    p.add_argument(
        "--e2e-peers-large",
        action="store_true",
        help="also run ours via numpyro NUTS above n = 1024",
    )
    p.add_argument("--systems", default=",".join(EVAL_SYSTEMS))
    p.add_argument("--e2e-systems", default=",".join(E2E_SYSTEMS))
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument(
        "--others",
        action="store_true",
        help="afterwards run the other scripts in benchmarks/ (selinv.py, ...)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads per configuration (default 1, see worker_env)",
    )
    args = p.parse_args(argv)
    global THREADS
    THREADS = args.threads
    args.max_n = int(args.max_n)
    args.e2e_max_n = int(args.e2e_max_n)
    args.systems = args.systems.split(",")
    args.e2e_systems = args.e2e_systems.split(",")
    args.tune = args.draws = 300 if args.quick else 1000
    t0 = time.time()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    print(
        f"[run_all] {started}, {os.cpu_count()} CPUs, load {load:.1f}, "
        f"python {platform.python_version()}",
        flush=True,
    )

    eval_rows = [] if args.skip_eval else eval_benchmarks(args)
    exps = {}
    for s in args.systems:
        ok = [r for r in eval_rows if r["system"] == s and r.get("status") == "ok"]
        # Exponents from n >= 10^4 where there are two such points (fixed overheads
        # dominate at 10^3), else from all measured points.
        big = [r for r in ok if r["n"] >= 10_000]
        use = big if len(big) >= 2 else ok
        exps[s] = (
            fit_exponent([r["n"] for r in use], [r["eval_min_s"] for r in use]),
            [r["n"] for r in use],
        )
        if exps[s][0] is not None:
            print(f"[scaling] {s:20s} t ~ n^{exps[s][0]:.2f}", flush=True)
    e2e_rows = [] if args.skip_e2e else e2e_benchmarks(args)

    write_csv(eval_rows, e2e_rows)
    if eval_rows:
        plots(eval_rows)
    eval_md, e2e_md = tables(eval_rows, e2e_rows, args, exps)
    head = (
        f"Run {started}: `{' '.join(['bash dev.sh bench', *(argv or sys.argv[1:])])}`, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start, "
        f"took {(time.time() - t0) / 60:.1f} min.\n\n"
    )
    # Separate files so that the two parts can be run (and re-run) on their own.
    if eval_rows:
        (OUT / "peers_eval_tables.md").write_text(
            "# Peers: per-evaluation tables\n\n" + head + eval_md
        )
        print(head + eval_md)
    if e2e_rows:
        (OUT / "peers_e2e_tables.md").write_text("# Peers: end-to-end tables\n\n" + head + e2e_md)
        print(head + e2e_md)

    if args.others:
        for script in (
            "selinv.py",
            "jax_vs_c.py",
            "logdet1d.py",
            "marginal_vs_latent.py",
            "selinv_grad.py",
        ):
            print(f"[others] {script}", flush=True)
            subprocess.run(
                [sys.executable, str(ROOT / "benchmarks" / script)], cwd=ROOT, check=False
            )


if __name__ == "__main__":
    main()
