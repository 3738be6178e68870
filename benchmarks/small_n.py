r"""Per-evaluation cost at small n: ours next to ``pm.ICAR`` / ``pm.CAR`` in one process.

Usage::

    python benchmarks/small_n.py icar          # ICAR prior and BYM2 Poisson, NYC + 10^4
    python benchmarks/small_n.py car           # CAR (table) prior at n = 1,024
    python benchmarks/small_n.py nutpie [draws tune chains]   # NYC BYM2 with nutpie, 3 seeds
    python benchmarks/small_n.py logdet        # exact logdet + grad vs one CHOLMOD factor
    python benchmarks/small_n.py compile 1e6   # C compile of the exact CAR model

Every row is measured in one run, ours and the peer interleaved (the machine is shared
and noisy: compare ratios, not absolute times).  Log-density + gradient evaluations use
``model.logp_dlogp_function`` compiled for the named PyTensor backend and are timed at
fresh points; we report the fastest of ``reps`` blocks of ``inner`` calls (the least
disturbed block on a shared machine).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lattice(n: int):
    """Rook adjacency of the ``nx x nx`` lattice, ``nx = round(sqrt(n))``."""
    from pymc_sparse.precision.builders import lattice_adjacency

    nx = max(2, round(math.sqrt(n)))
    return lattice_adjacency(nx, nx).tocsc()


def graphs(which):
    """``(label, W)`` pairs: the NYC tract graph and a 100 x 100 lattice."""
    from models._data import load_nyc

    out = []
    if "nyc" in which:
        out.append(("nyc", load_nyc()["W"]))
    if "1e4" in which:
        out.append(("lattice_1e4", lattice(10_000)))
    return out


# ------------------------------------------------------------------------------ models
def icar_model(system, W):
    """ICAR prior alone (sigma ~ HalfNormal): ours (hard constraint) or pm.ICAR (soft).

    ``ours_notransform`` scores the same log-density on an unconstrained value (no
    zero-sum map): the cost of our log-density alone, to separate it from the transform.
    """
    import pymc as pm

    with pm.Model() as m:
        sigma = pm.HalfNormal("sigma", 1.0)
        if system.startswith("ours"):
            from pymc_sparse.distributions.icar import ICAR

            kw = {"default_transform": None} if system == "ours_notransform" else {}
            ICAR("phi", W=W, sigma=sigma, **kw)
        else:
            pm.ICAR("phi", W=W.toarray(), sigma=sigma)
    return m


def bym2_model(system, W, seed=0):
    """BYM2 Poisson with an intercept (the NYC model's shape) on simulated counts."""
    import pymc as pm

    from pymc_sparse.precision.scaling import scaling_factor

    n = W.shape[0]
    rng = np.random.default_rng(seed)
    E = rng.uniform(50, 500, n)
    y = rng.poisson(E * np.exp(-0.2 + 0.3 * rng.standard_normal(n)))
    with pm.Model() as m:
        beta0 = pm.Normal("beta0", 0.0, 1.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        rho = pm.Beta("rho", 0.5, 0.5)
        if system == "ours":
            from pymc_sparse.distributions.bym2 import BYM2

            b = BYM2("b", W=W, sigma=sigma, rho=rho)
        else:
            s = float(scaling_factor(W))
            u = pm.ICAR("u", W=W.toarray(), sigma=1.0)
            v = pm.Normal("v", 0.0, 1.0, shape=n)
            b = sigma * (pm.math.sqrt(rho / s) * u + pm.math.sqrt(1.0 - rho) * v)
        pm.Poisson("y", mu=E * pm.math.exp(beta0 + b), observed=y)
    return m


def car_model(system, W, logdet="interpolated"):
    """Proper CAR prior with free alpha and tau (the eval task of ``peers.py``)."""
    import pymc as pm

    with pm.Model() as m:
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        tau = pm.Gamma("tau", 2.0, 1.0)
        if system == "ours":
            from pymc_sparse.distributions.car import CAR

            CAR("x", mu=0.0, W=W, alpha=alpha, tau=tau, logdet=logdet)
        else:
            # A scipy sparse W takes pm.CAR's sparse path (as in peers.py).
            pm.CAR("x", mu=np.zeros(W.shape[0]), W=W, alpha=alpha, tau=tau)
    return m


# ------------------------------------------------------------------------------ timing
def compiled(model, backend):
    """``logp_dlogp_function`` of ``model`` for a PyTensor backend ("C" or "NUMBA")."""
    mode = "FAST_RUN" if backend == "C" else backend
    f = model.logp_dlogp_function(ravel_inputs=True, mode=mode)
    f.set_extra_values({})
    x0 = np.concatenate([np.ravel(model.initial_point()[v.name]) for v in f._grad_vars])
    return f, x0


def time_pair(fns, reps=15, inner=200, seed=0, clock=time.perf_counter):
    """Seconds per call (best block) of each ``(f, x0)``, interleaved block by block.

    ``clock``: ``time.perf_counter`` (wall) or ``time.process_time`` (CPU time of the
    process, which a loaded machine's preemption does not inflate).
    """
    rng = np.random.default_rng(seed)
    pts = [[x0 + 0.1 * rng.standard_normal(x0.size) for _ in range(8)] for _, x0 in fns]
    for (f, _), p in zip(fns, pts, strict=True):
        for q in p:
            f(q)
    samples = [[] for _ in fns]
    for _ in range(reps):
        for k, ((f, _), p) in enumerate(zip(fns, pts, strict=True)):
            t = clock()
            for i in range(inner):
                f(p[i % 8])
            samples[k].append((clock() - t) / inner)
    # Minimum over blocks: on a shared machine the fastest block is the least disturbed.
    return [float(np.min(s)) for s in samples]


def bench_icar(which=("nyc", "1e4"), backends=("C", "NUMBA")):
    """ICAR prior and BYM2 Poisson, ours against pm.ICAR: CPU time per logp + gradient."""
    print("CPU time (time.process_time) per log-density + gradient, best of 15 blocks")
    rows = []
    for label, W in graphs(which):
        for kind, build in (("icar", icar_model), ("bym2", bym2_model)):
            for backend in backends:
                fns = [compiled(build("ours", W), backend), compiled(build("pm", W), backend)]
                if kind == "icar":
                    fns.append(compiled(build("ours_notransform", W), backend))
                inner = 200 if W.shape[0] < 5000 else 50
                ts = time_pair(fns, inner=inner, clock=time.process_time)
                rows.append((label, W.shape[0], kind, backend, *ts))
                extra = (
                    f"  ours w/o zero-sum map {1e3 * ts[2]:7.4f} ms ({ts[2] / ts[1]:4.2f}x)"
                    if len(ts) > 2
                    else ""
                )
                print(
                    f"{label:12s} n={W.shape[0]:6d} {kind:5s} {backend:5s} "
                    f"ours {1e3 * ts[0]:7.4f} ms  pm.ICAR {1e3 * ts[1]:7.4f} ms  "
                    f"ratio {ts[0] / ts[1]:5.2f}{extra}",
                    flush=True,
                )
    return rows


def nyc_notebook_model(data, icar="pm"):
    """PyMC's BYM notebook model (``pm.ICAR``, hand-written BYM2), intercept only.

    As in pymc-examples ``spatial/nyc_bym`` (and ``docs/examples/pymc_nyc_bym.py``): dense
    ``W``, unit ``pm.ICAR`` ``phi``, iid ``theta``, the scaling factor ``s`` outside.
    ``icar="pms"``: the same model with ``pms.ICAR`` swapped in for ``pm.ICAR`` (the
    user's one-line change of issue 16); ``icar="pms-soft"``: with ``pms.ICAR(...,
    zero_sum_stdev=0.001)``, ``pm.ICAR``'s own soft constraint.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from pymc_sparse.distributions.icar import ICAR
    from pymc_sparse.precision.scaling import scaling_factor

    s = float(scaling_factor(data["W"]))
    log_E = np.log(np.asarray(data["E"], dtype=np.float64))
    with pm.Model(coords={"area_idx": np.arange(data["n"])}) as model:
        beta0 = pm.Normal("beta0", 0, 1)
        theta = pm.Normal("theta", 0, 1, dims="area_idx")
        if icar == "pm":
            phi = pm.ICAR("phi", W=data["W"].toarray(), dims="area_idx")
        else:
            soft = 0.001 if icar == "pms-soft" else None
            phi = ICAR("phi", W=data["W"], zero_sum_stdev=soft, dims="area_idx")
        sigma = pm.HalfNormal("sigma", 1)
        rho = pm.Beta("rho", 0.5, 0.5)
        mixture = pm.Deterministic(
            "mixture", pt.sqrt(1 - rho) * theta + pt.sqrt(rho / s) * phi, dims="area_idx"
        )
        mu = pm.Deterministic("mu", pt.exp(log_E + beta0 + sigma * mixture), dims="area_idx")
        pm.Poisson("y_i", mu, observed=data["y"])
    return model


def _cpu_seconds():
    """CPU time of this process (all threads) and of its finished child processes."""
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def bench_nutpie(draws=500, tune=500, chains=2, seeds=(8926, 1, 2)):
    """NYC BYM2 with nutpie (numba backend): the notebook with ``pm.ICAR`` and with ours.

    Five models, each compiled with ``nutpie.compile_pymc_model`` and sampled with the
    same draws, tune, chains and seeds: the notebook's (``pm.ICAR``), the notebook with
    ``pms.ICAR`` swapped in (exact constraint, and ``pm.ICAR``'s soft one), and
    ``models.nyc_bym2`` (``pms.BYM2``, both constraints).  Per seed: CPU time
    of sampling (process time of all threads plus child processes), mean leapfrog steps
    per draw, the smallest bulk ESS of (beta0, sigma, rho) and over every free coordinate.
    Reported: sampling CPU time (equal draws) and CPU seconds per effective draw.
    """
    try:
        import nutpie
    except ImportError:
        print("nutpie is not installed in this environment: `pip install nutpie`.")
        return []
    import functools

    import arviz as az

    from models.nyc_bym2 import build_model, load_data

    data = load_data()
    builds = (
        ("pm.ICAR (notebook)", nyc_notebook_model),
        ("pms.ICAR in the notebook", functools.partial(nyc_notebook_model, icar="pms")),
        (
            "pms.ICAR(zero_sum_stdev=0.001)",
            functools.partial(nyc_notebook_model, icar="pms-soft"),
        ),
        ("pms.BYM2 (models/nyc_bym2.py)", build_model),
        ("pms.BYM2(zero_sum_stdev=0.001)", functools.partial(build_model, zero_sum_stdev=0.001)),
    )
    compiled = {}
    for label, build in builds:
        model = build(data)
        c0 = _cpu_seconds()
        compiled[label] = (model, nutpie.compile_pymc_model(model), _cpu_seconds() - c0)
    rows = []
    for seed in seeds:
        for label, _ in builds:
            model, fn, compile_cpu = compiled[label]
            c1, w1 = _cpu_seconds(), time.perf_counter()
            idata = nutpie.sample(
                fn, draws=draws, tune=tune, chains=chains, seed=seed, progress_bar=False
            )
            c2, w2 = _cpu_seconds(), time.perf_counter()
            names = [rv.name for rv in model.free_RVs]
            ess = az.ess(idata, var_names=names, method="bulk")
            min_all = min(float(ess[v].min()) for v in names)
            main = min(float(ess[v].min()) for v in ("beta0", "sigma", "rho"))
            steps = float(idata.sample_stats["n_steps"].mean())
            div = int(idata.sample_stats["diverging"].sum())
            rows.append((seed, label, c2 - c1, w2 - w1, main, min_all, steps, div, compile_cpu))
            print(
                f"seed {seed:5d} {label:30s} sample {c2 - c1:6.1f} s CPU ({w2 - w1:5.1f} s wall)"
                f"  leapfrog/draw {steps:6.1f}  min bulk ESS beta0/sigma/rho {main:6.1f}, "
                f"all {min_all:6.1f}  CPU s per ESS {(c2 - c1) / main:6.3f}  div {div}",
                flush=True,
            )
    peer = "pm.ICAR (notebook)"
    for label, _ in builds[1:]:
        mine = [r for r in rows if r[1] == label]
        ref = [r for r in rows if r[1] == peer]
        cpu = sum(r[2] for r in mine) / sum(r[2] for r in ref)
        per_ess = (sum(r[2] for r in mine) / sum(r[4] for r in mine)) / (
            sum(r[2] for r in ref) / sum(r[4] for r in ref)
        )
        print(
            f"{label:30s} vs {peer}: sampling CPU time {cpu:4.2f}x at equal draws, "
            f"{per_ess:4.2f}x per effective draw of (beta0, sigma, rho) (all seeds pooled)"
        )
    return rows


def bench_car(n=1024, backends=("C", "NUMBA")):
    W = lattice(n)
    for backend in backends:
        ours = compiled(car_model("ours", W), backend)
        peer = compiled(car_model("pm", W), backend)
        t_ours, t_peer = time_pair([ours, peer], inner=50)
        print(
            f"car n={W.shape[0]} {backend:5s} ours(table) {1e3 * t_ours:7.4f} ms  "
            f"pm.CAR {1e3 * t_peer:7.4f} ms  ratio {t_ours / t_peer:5.2f}",
            flush=True,
        )


def bench_logdet(sizes=(1024, 10_000, 99_856), reps=None):
    """Exact ``pms.logdet`` value + gradient against CHOLMOD's fastest numeric factorisation.

    The floor is one numeric factorisation (scikit-sparse's ``cholesky`` on a stored
    analysis) with each ordering CHOLMOD offers (AMD, METIS, NESDIS, and ``best``, its
    pick of several).  Ours and the floors are interleaved block by block; ours is
    called at a fresh value vector every time (a cache hit would time nothing), and each
    reports the fastest block.  Results go to ``benchmarks/results/small_n_logdet.json``.
    """
    import json

    import pytensor
    import pytensor.tensor as pt
    from sksparse.cholmod import analyze

    from pymc_sparse.linalg.cholmod import CACHE
    from pymc_sparse.linalg.pattern import SparsityPattern
    from pymc_sparse.ops.logdet import logdet
    from pymc_sparse.ops.matrix import SparseMatrix
    from pymc_sparse.precision.builders import car_precision

    rows = []
    for n in sizes:
        W = lattice(n)
        Q = car_precision(W, 0.9, 2.0).tocsc()
        pat, q0 = SparsityPattern.from_scipy(Q)
        nreps, inner = reps or (15 if n < 5e4 else 7), 100 if n < 5e3 else (8 if n < 5e4 else 1)
        fns = {}
        for ordering in ("amd", "metis", "nesdis", "best"):
            try:
                sym = analyze(Q, ordering_method=ordering)
            except Exception:  # ordering not compiled in
                continue
            fns[ordering] = lambda i, sym=sym: sym.cholesky(Q)
        d = pt.vector("d", dtype="float64")
        ld = logdet(SparseMatrix(pat, d))
        f = pytensor.function([d], [ld, pytensor.grad(ld, d)], mode="FAST_RUN")
        f(q0)
        rng = np.random.default_rng(0)
        base = [q0 * (1 + 1e-3 * rng.standard_normal()) for _ in range(inner)]
        qs = []
        fns["ours"] = lambda i: f(qs[i])
        best = {k: np.inf for k in fns}
        cpu = {k: np.inf for k in fns}  # CPU time of the process: less disturbed by load
        for b in range(nreps):
            qs[:] = [q * (1 + 1e-7 * (b + 1)) for q in base]  # fresh values for every call
            for k, fn in fns.items():
                c, t = time.process_time(), time.perf_counter()
                for i in range(inner):
                    fn(i)
                best[k] = min(best[k], (time.perf_counter() - t) / inner)
                cpu[k] = min(cpu[k], (time.process_time() - c) / inner)
        t_ours = best.pop("ours")
        c_ours = cpu.pop("ours")
        floor = min(best, key=best.get)
        sym = CACHE._symbolic[pat.key]
        row = {
            "n": int(pat.n),
            "ours_ms": 1e3 * t_ours,
            "floor_ordering": floor,
            "floor_ms": 1e3 * best[floor],
            "ratio": t_ours / best[floor],
            "floors_ms": {k: 1e3 * v for k, v in best.items()},
            "cpu_ours_ms": 1e3 * c_ours,
            "cpu_floor_ms": 1e3 * min(cpu.values()),
            "cpu_ratio": c_ours / min(cpu.values()),
            "ours_kind": "simplicial" if getattr(sym, "simplicial", None) else "supernodal",
            "blocks": nreps,
            "calls_per_block": inner,
        }
        rows.append(row)
        print(
            f"logdet n={n:7d} value+grad {row['ours_ms']:8.3f} ms  floor({floor}) "
            f"{row['floor_ms']:8.3f} ms  ratio {row['ratio']:5.2f}  "
            f"floors {', '.join(f'{k}={v:.3f}' for k, v in row['floors_ms'].items())}  "
            f"[{row['ours_kind']}]  CPU-time ratio {row['cpu_ratio']:5.2f}",
            flush=True,
        )
    import os

    out = Path(__file__).resolve().parent / "results" / "small_n_logdet.json"
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()}
    out.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return rows


def bench_compile(n=1_000_000):
    """Where the C-backend compile of the exact CAR model's logp + gradient goes.

    Timed in turn: PyTensor's on-disk module cache, loaded on a tiny graph (a per-process
    cost that grows with the shared cache, not with the model); the model build;
    ``model.initial_point()``, with the factorisations it makes counted (there must be
    none: a support point that references the variable made it draw from the CAR);
    ``logp_dlogp_function``, which PyTensor's profiler splits into graph rewrites, the
    linker (C code generation, module-cache look-up and any gcc compile) and module
    import, the rest being the logp and gradient graphs; and the first call, which is
    CHOLMOD's analysis, factorisation and selected inverse, not compilation.  Run once
    with ``PYTENSOR_FLAGS=compiledir=/tmp/<fresh>`` for the cold-cache cost.
    """
    import pytensor
    import pytensor.tensor as pt
    from pytensor.compile.profiling import ProfileStats

    from pymc_sparse.linalg.cholmod import CACHE

    t = time.perf_counter()
    x = pt.vector("x")
    pytensor.function([x], pt.exp(x) * 2)
    cache_load = time.perf_counter() - t
    W = lattice(n)
    t0 = time.perf_counter()
    m = car_model("ours", W, logdet="exact")
    t1 = time.perf_counter()
    calls = []
    factor = CACHE.factor
    CACHE.factor = lambda *a, **k: calls.append(1) or factor(*a, **k)
    try:
        ip = m.initial_point()
    finally:
        del CACHE.factor  # back to the class's method
    t2 = time.perf_counter()
    prof = ProfileStats(atexit_print=False)
    f = m.logp_dlogp_function(ravel_inputs=True, mode="FAST_RUN", initial_point=ip, profile=prof)
    t3 = time.perf_counter()
    f.set_extra_values({})
    x0 = np.concatenate([np.ravel(ip[v.name]) for v in f._grad_vars])
    t4 = time.perf_counter()
    f(x0)
    t5 = time.perf_counter()
    graph = (t3 - t2) - prof.rewriting_time - prof.linker_time - prof.import_time
    print(
        f"compile exact CAR n={W.shape[0]} (compiledir {pytensor.config.compiledir})\n"
        f"  module cache load {cache_load:6.2f} s   (tiny graph; per process)\n"
        f"  model build       {t1 - t0:6.2f} s\n"
        f"  initial point     {t2 - t1:6.2f} s   ({len(calls)} factorisations)\n"
        f"  logp+dlogp fn     {t3 - t2:6.2f} s = graphs {graph:.2f} + rewrites "
        f"{prof.rewriting_time:.2f} + linker {prof.linker_time:.2f} + import "
        f"{prof.import_time:.2f}\n"
        f"  compile total     {t3 - t0:6.2f} s   (build to compiled function)\n"
        f"  first call        {t5 - t4:6.2f} s   (factorisation + selected inverse)"
    )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "icar"
    args = sys.argv[2:]
    if what == "icar":
        bench_icar(tuple(args) or ("nyc", "1e4"))
    elif what == "car":
        bench_car()
    elif what == "nutpie":
        kw = dict(zip(("draws", "tune", "chains"), (int(a) for a in args), strict=False))
        bench_nutpie(**kw)
    elif what == "logdet":
        bench_logdet(tuple(int(float(a)) for a in args) or (1024, 10_000, 99_856))
    elif what == "compile":
        sizes = [a for a in args if not a.startswith("--")]
        bench_compile(int(float(sizes[0])) if sizes else 1_000_000)
    else:
        raise SystemExit(f"unknown benchmark {what!r}")
