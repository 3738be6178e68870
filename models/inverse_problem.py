r"""Inverse problem: gradients of :math:`\tfrac12\|A(w)^{-1}b\|^2` w.r.t. every edge weight.

The example of the PyTorch sparse-solve README (one of the project's seeds): for a
graph with ``m`` edges and one weight :math:`w_e \ge 0` per edge,

.. math:: A(w) = I + L(w), \qquad L(w) = \sum_e w_e (e_i - e_j)(e_i - e_j)^\top,
          \qquad \mathcal L(w) = \tfrac12 \|A(w)^{-1} b\|^2 ,

the identity plus the weighted graph Laplacian, symmetric positive definite for
:math:`w \ge 0`.  With :math:`x = A^{-1}b` and :math:`\lambda = A^{-1}x`,

.. math:: \frac{\partial\mathcal L}{\partial w_e} = -(\lambda_i - \lambda_j)(x_i - x_j),

all ``m`` partial derivatives from one factorisation and two solves.  Here the gradient
is not written by hand: :func:`pymc_sparse.solve` is differentiated by PyTensor, whose
reverse-mode rule for the solve reuses the cached CHOLMOD factor.

``b`` is a fixed random vector (with the seed's ``b = 1`` the loss is constant, since
:math:`A\mathbf 1 = \mathbf 1`).  The loss decreases as weights grow (more smoothing) down
to :math:`\tfrac12 n \bar b^2`, so the optimisation keeps the weights in a box
:math:`0 \le w_e \le w_{\max}` (L-BFGS-B bounds; the loss itself is unchanged).

Run from the repository root::

    python -m models.inverse_problem                 # lattice graph, 10^5 edges
    python -m models.inverse_problem --graph random --edges 3000

It checks the gradient against dense NumPy solves at small ``n``, times one loss +
gradient at the full size, runs L-BFGS-B and saves ``models/output/inverse_problem.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from scipy.optimize import minimize

from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops import solve
from pymc_sparse.ops.matrix import SparseMatrix

OUTPUT = Path(__file__).resolve().parent / "output"


def make_graph(
    edges: int = 100_000, graph: str = "lattice", seed: int = 0
) -> tuple[int, np.ndarray]:
    """A graph with about ``edges`` undirected edges, as ``(n, (m, 2) int array)``.

    ``"lattice"``: the smallest square rook lattice with at least ``edges`` edges
    (``2 k (k - 1)`` for ``k x k`` nodes).  ``"random"``: ``n = edges // 3`` nodes (mean
    degree 6, as in the seed) and ``edges`` distinct random pairs without self-loops.
    Random graphs are expanders: their Cholesky factors fill in almost completely, so
    keep ``edges`` in the low thousands for them.
    """
    rng = np.random.default_rng(seed)
    if graph == "lattice":
        k = 2
        while 2 * k * (k - 1) < edges:
            k += 1
        idx = np.arange(k * k).reshape(k, k)
        e = np.concatenate(
            [
                np.column_stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()]),
                np.column_stack([idx[:-1, :].ravel(), idx[1:, :].ravel()]),
            ]
        )
        return k * k, e
    if graph == "random":
        n = max(edges // 3, 4)
        if edges > n * (n - 1) // 2:
            raise ValueError(f"{edges} edges do not fit in a simple graph on {n} nodes.")
        keys: set = set()
        out = []
        while len(out) < edges:
            i, j = rng.integers(0, n, size=2)
            if i == j:
                continue
            key = (min(i, j), max(i, j))
            if key not in keys:
                keys.add(key)
                out.append(key)
        return n, np.asarray(out, dtype=np.int64)
    raise ValueError(f"`graph` must be 'lattice' or 'random', got {graph!r}.")


def load_data(edges: int = 2_000, graph: str = "lattice", seed: int = 0) -> dict:
    """Graph, right-hand side ``b`` (standard normal, fixed seed) and initial weights 1."""
    n, e = make_graph(edges, graph, seed)
    rng = np.random.default_rng(seed + 1)
    return {
        "n": n,
        "edges": e,
        "b": rng.standard_normal(n),
        "w0": np.ones(e.shape[0]),
        "graph": graph,
    }


def system_matrix(n: int, edges: np.ndarray, w) -> SparseMatrix:
    r""":math:`A(w) = I + L(w)` as a :class:`SparseMatrix` with symbolic values.

    The pattern (diagonal + one stored entry per edge) is fixed; the values are
    :math:`1 + \sum_{e \ni i} w_e` on the diagonal and :math:`-w_e` off it, so
    ``pytensor.grad`` reaches every :math:`w_e`.
    """
    edges = np.asarray(edges, dtype=np.int64)
    pattern = SparsityPattern.from_coo(n, edges[:, 0], edges[:, 1])
    if pattern.nnz != n + edges.shape[0]:
        raise ValueError("The edge list has duplicate edges or self-loops.")
    w = pt.as_tensor_variable(w)
    deg = pt.zeros(n, dtype="float64")
    deg = pt.inc_subtensor(deg[edges[:, 0]], w)
    deg = pt.inc_subtensor(deg[edges[:, 1]], w)
    data = pt.zeros(pattern.nnz, dtype="float64")
    data = pt.set_subtensor(data[pattern.index_of(edges[:, 0], edges[:, 1])], -w)
    data = pt.set_subtensor(data[pattern.diag_index], 1.0 + deg)
    return SparseMatrix(pattern, data)


def loss(data: dict, w) -> pt.TensorVariable:
    r"""Symbolic :math:`\tfrac12\|A(w)^{-1}b\|^2`."""
    x = solve(system_matrix(data["n"], data["edges"], w), pt.constant(data["b"]))
    return 0.5 * pt.sum(x**2)


def compile_loss_grad(data: dict):
    """A compiled ``w -> (loss, dloss/dw)``."""
    w = pt.vector("w", dtype="float64")
    L = loss(data, w)
    return pytensor.function([w], [L, pytensor.grad(L, w)])


def build_model(data: dict, w_max: float = 10.0) -> pm.Model:
    r"""The loss as a PyMC model, :math:`p(w) \propto e^{-\mathcal L(w)}` on the box.

    The box is :math:`[0, w_{\max}]^m` (a Uniform prior on every weight).

    Its MAP is the box-constrained minimiser of :math:`\mathcal L`; sampling it explores
    the weights compatible with a small loss.
    """
    m = data["edges"].shape[0]
    with pm.Model() as model:
        w = pm.Uniform("w", 0.0, w_max, shape=(m,), initval=np.asarray(data["w0"], dtype=float))
        L = pm.Deterministic("loss", loss(data, w))
        pm.Potential("neg_loss", -L)
    return model


def dense_gradient(data: dict, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss and gradient from dense NumPy solves and the closed form (reference, small n)."""
    n, e = data["n"], data["edges"]
    A = np.eye(n)
    for (i, j), we in zip(e, w, strict=True):
        A[i, i] += we
        A[j, j] += we
        A[i, j] -= we
        A[j, i] -= we
    x = np.linalg.solve(A, data["b"])
    lam = np.linalg.solve(A, x)
    g = -(lam[e[:, 0]] - lam[e[:, 1]]) * (x[e[:, 0]] - x[e[:, 1]])
    return 0.5 * float(x @ x), g


def check_dense(n_edges: int = 300, graph: str = "random", seed: int = 3) -> dict:
    """Sparse (PyTensor) vs dense loss and gradient at random weights, plus finite differences."""
    data = load_data(n_edges, graph, seed)
    f = compile_loss_grad(data)
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.1, 2.0, size=data["edges"].shape[0])
    L, g = f(w)
    Ld, gd = dense_gradient(data, w)
    h = 1e-6
    k = rng.integers(0, w.size)
    wp, wm = w.copy(), w.copy()
    wp[k] += h
    wm[k] -= h
    fd = (dense_gradient(data, wp)[0] - dense_gradient(data, wm)[0]) / (2 * h)
    return {
        "n": data["n"],
        "m": w.size,
        "loss_rel_err": abs(float(L) - Ld) / abs(Ld),
        "grad_max_rel_err": float(np.max(np.abs(g - gd)) / np.max(np.abs(gd))),
        "fd_rel_err": abs(float(g[k]) - fd) / max(abs(fd), 1e-300),
    }


def time_loss_grad(f, m: int, repeats: int = 4, seed: int = 1) -> tuple[float, float]:
    """(best, first) wall time of ``f(w)`` at new random weights (no factor-cache hit)."""
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(repeats):
        w = rng.uniform(0.5, 1.5, size=m)
        t0 = time.perf_counter()
        f(w)
        times.append(time.perf_counter() - t0)
    return min(times[1:]), times[0]


def optimise(f, data: dict, w_max: float, maxiter: int):
    """L-BFGS-B on the box ``0 <= w <= w_max`` from ``data["w0"]``.

    Returns the SciPy result, the loss at every evaluation and the wall time.
    """
    history = []

    def fun(w):
        loss, grad = f(w)
        history.append(float(loss))
        return float(loss), np.asarray(grad)

    t0 = time.perf_counter()
    m = data["edges"].shape[0]
    res = minimize(
        fun,
        data["w0"],
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, w_max)] * m,
        options={"maxiter": maxiter},
    )
    return res, history, time.perf_counter() - t0


def plot_optimisation(history, floor: float, res):
    """Loss above its lower bound per evaluation, and the histogram of optimised weights."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].semilogy(np.asarray(history) - floor, ".-")
    ax[0].set_xlabel("function evaluation")
    ax[0].set_ylabel("loss - lower bound")
    ax[0].set_title(f"L-BFGS-B on {res.x.size:,} edge weights")
    ax[1].hist(res.x, bins=50)
    ax[1].set_xlabel("optimised weight")
    ax[1].set_title("weights after optimisation")
    fig.tight_layout()
    return fig


def main(argv=None):
    """Dense check, timing of one gradient, L-BFGS-B on the full problem, plots."""

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edges", type=int, default=100_000)
    p.add_argument("--graph", choices=["lattice", "random"], default="lattice")
    p.add_argument("--w-max", type=float, default=10.0)
    p.add_argument("--maxiter", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    chk = check_dense()
    print(
        f"dense check (random graph, n={chk['n']}, m={chk['m']}): loss rel err "
        f"{chk['loss_rel_err']:.1e}, gradient max rel err {chk['grad_max_rel_err']:.1e}, "
        f"finite difference rel err {chk['fd_rel_err']:.1e}"
    )

    data = load_data(args.edges, args.graph, args.seed)
    n, m = data["n"], data["edges"].shape[0]
    print(f"{args.graph} graph: n = {n} nodes, m = {m} edges (= parameters)")
    t0 = time.perf_counter()
    f = compile_loss_grad(data)
    print(f"compile: {time.perf_counter() - t0:.1f} s")
    best, first = time_loss_grad(f, m)
    print(
        f"one loss + gradient w.r.t. all {m} weights: {best:.3f} s "
        f"(first call {first:.3f} s, includes the symbolic analysis)"
    )
    res, history, wall = optimise(f, data, args.w_max, args.maxiter)
    floor = 0.5 * n * data["b"].mean() ** 2
    print(
        f"L-BFGS-B: loss {history[0]:.4g} -> {res.fun:.4g} in {res.nit} iterations, "
        f"{res.nfev} evaluations, {wall:.1f} s (lower bound 0.5 n mean(b)^2 = {floor:.4g}); "
        f"{np.mean(res.x >= args.w_max - 1e-9):.1%} of the weights at w_max, "
        f"{np.mean(res.x <= 1e-9):.1%} at 0"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUTPUT.mkdir(parents=True, exist_ok=True)
    fig = plot_optimisation(history, floor, res)
    fig.savefig(OUTPUT / "inverse_problem.png", dpi=80)
    plt.close(fig)
    print(f"saved {OUTPUT / 'inverse_problem.png'}")
    return res


if __name__ == "__main__":
    main()
