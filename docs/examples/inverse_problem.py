# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # An inverse problem: the gradient of a sparse solve w.r.t. every edge weight
#
# `models/inverse_problem.py` ({doc}`../models`, model 5), used as it is.  A graph with
# $m$ edges carries one weight $w_e \ge 0$ per edge;
#
# $$
# A(w) = I + L(w), \qquad L(w) = \sum_e w_e (e_i - e_j)(e_i - e_j)^\top, \qquad
# \mathcal L(w) = \tfrac12 \|A(w)^{-1} b\|^2,
# $$
#
# with $L(w)$ the weighted graph Laplacian ($A$ is symmetric positive definite for
# $w \ge 0$) and $b$ a fixed standard-normal vector.  The loss is written with
# `pms.solve` and **differentiated by PyTensor**; nothing below writes the gradient by
# hand.  The closed form, used only as a dense reference, is
# $\partial\mathcal L/\partial w_e = -(\lambda_i - \lambda_j)(x_i - x_j)$ with
# $x = A^{-1}b$ and $\lambda = A^{-1}x$.
#
# **Quick mode.** With `PYMC_SPARSE_EXAMPLES_QUICK=1` (continuous integration) the
# optimisation runs on a 2,000-edge lattice for 20 iterations instead of 100,800 edges and
# 50 iterations, and the page prints a line saying so; the rendered page is the full run.

# %%
import time
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import matplotlib.pyplot as plt
import numpy as np

from models._examples import QUICK
from models.inverse_problem import (
    check_dense,
    compile_loss_grad,
    dense_gradient,
    load_data,
    optimise,
    plot_optimisation,
    time_loss_grad,
)

EDGES, MAXITER = (2_000, 20) if QUICK else (100_000, 50)
W_MAX = 10.0
if QUICK:
    print(
        f"QUICK MODE (PYMC_SPARSE_EXAMPLES_QUICK=1): {EDGES:,} edges and {MAXITER} "
        "L-BFGS-B iterations instead of 100,000 edges and 50 iterations."
    )

# %% [markdown]
# ## The gradient through `pms.solve` against dense NumPy, at small $n$
#
# A random graph with 100 nodes and 300 edges, random weights: the loss and all 300
# partial derivatives from the sparse graph (one CHOLMOD factorisation, reused by the
# reverse-mode rule of the solve) against dense `numpy.linalg.solve` with the closed
# form, and one partial derivative against a central finite difference.

# %%
chk = check_dense(n_edges=300, graph="random", seed=3)
print(
    f"n = {chk['n']}, m = {chk['m']}: loss rel. error {chk['loss_rel_err']:.1e}, "
    f"gradient max rel. error {chk['grad_max_rel_err']:.1e}, "
    f"finite-difference rel. error {chk['fd_rel_err']:.1e}"
)
assert chk["loss_rel_err"] < 1e-12 and chk["grad_max_rel_err"] < 1e-10
assert chk["fd_rel_err"] < 1e-5

small = load_data(300, "random", 3)
w_small = np.random.default_rng(3).uniform(0.1, 2.0, size=small["edges"].shape[0])
g_sparse = compile_loss_grad(small)(w_small)[1]
g_dense = dense_gradient(small, w_small)[1]
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter(g_dense, g_sparse, s=8)
ax.plot([g_dense.min(), g_dense.max()], [g_dense.min(), g_dense.max()], "k:", lw=1)
ax.set_xlabel("dense closed form")
ax.set_ylabel("PyTensor gradient through pms.solve")
ax.set_title("dL/dw_e, 300 edges")
plt.show()

# %% [markdown]
# ## Optimisation on a large lattice
#
# A square rook lattice with at least `EDGES` edges (`make_graph`: $225 \times 225$
# nodes and 100,800 edges in the full run).  The loss falls as weights grow (more
# smoothing, towards $\tfrac12 n \bar b^2$), so L-BFGS-B keeps every weight in the box
# $0 \le w_e \le w_{\max} = 10$; the loss itself is not changed.  Each evaluation is one
# numeric factorisation plus two solves with it, whatever $m$.

# %%
data = load_data(EDGES, "lattice", 0)
n, m = data["n"], data["edges"].shape[0]
print(f"lattice graph: n = {n:,} nodes, m = {m:,} edges (= parameters)")
t0 = time.perf_counter()
f = compile_loss_grad(data)
print(f"compile: {time.perf_counter() - t0:.1f} s")
best, first = time_loss_grad(f, m)
print(
    f"one loss + gradient w.r.t. all {m:,} weights: best {best:.3f} s "
    f"(first call {first:.3f} s, includes the symbolic analysis)"
)

# %%
res, history, wall = optimise(f, data, W_MAX, MAXITER)
floor = 0.5 * n * data["b"].mean() ** 2
print(
    f"L-BFGS-B: loss {history[0]:.4g} -> {res.fun:.4g} in {res.nit} iterations, "
    f"{res.nfev} evaluations, {wall:.1f} s (lower bound 0.5 n mean(b)^2 = {floor:.4g})"
)
print(f"weights at w_max: {np.mean(res.x >= W_MAX - 1e-9):.1%}, at 0: {np.mean(res.x <= 1e-9):.1%}")
assert res.fun < history[0]

plot_optimisation(history, floor, res)
plt.show()
