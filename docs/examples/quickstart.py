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
# # The core API in ten minutes
#
# This notebook uses only the core of `pymc_sparse`: a sparse symmetric matrix with a
# static pattern and symbolic values, its log-determinant and gradient, solves, the
# selected inverse, exact draws, and the shared factor cache.  Every number printed is
# checked against a dense NumPy/SciPy computation at small size; the last section times
# a lattice with more than $10^5$ nodes, where a dense computation is out of reach.
#
# The matrix throughout is the proper CAR precision of a 2-D lattice,
#
# $$Q(\tau, \alpha) = \tau\,(D - \alpha W),$$
#
# with $W$ the 0/1 rook adjacency and $D = \operatorname{diag}(W\mathbf 1)$; it is
# positive definite for $\tau > 0$ and $|\alpha| < 1$.

# %%
import time
import warnings

# No ipywidgets in a docs build: tqdm's notebook progress bar falls back to text.
warnings.filterwarnings("ignore", message="IProgress not found")

import _repo  # noqa: F401  (puts the repository root on sys.path for `models`)
import matplotlib.pyplot as plt
import numpy as np
import pytensor
import pytensor.tensor as pt
import scipy.linalg
import scipy.sparse as sp

import pymc_sparse as pms
from models._examples import QUICK

pytensor.config.floatX = "float64"  # CHOLMOD works in double precision

# The examples' quick mode (CI smoke runs) reduces sampling; this page samples nothing,
# so it runs identically in both modes, the 10^5-node lattice included.
if QUICK:
    print("QUICK MODE (PYMC_SPARSE_EXAMPLES_QUICK=1): nothing to reduce on this page.")


def lattice_adjacency(nx, ny):
    """0/1 rook adjacency of an nx x ny lattice, node index i * ny + j."""
    path = lambda m: sp.diags([np.ones(m - 1), np.ones(m - 1)], [-1, 1])  # noqa: E731
    return (sp.kron(path(nx), sp.identity(ny)) + sp.kron(sp.identity(nx), path(ny))).tocsc()


nx, ny = 4, 5
W = lattice_adjacency(nx, ny)
D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
print(f"n = {W.shape[0]} nodes, {W.nnz // 2} edges")

# %% [markdown]
# ## A sparse matrix: static pattern, symbolic values
#
# `SparseMatrix.from_scipy` keeps the *lower triangle* (diagonal included) of a
# symmetric scipy matrix: a `SparsityPattern` fixed when the graph is built, plus a
# vector `data` of values.  Arithmetic keeps the pattern static, so multiplying by
# random variables gives a matrix whose values are a PyTensor expression.

# %%
tau = pt.scalar("tau")
alpha = pt.scalar("alpha")
Dm = pms.SparseMatrix.from_scipy(D)
Wm = pms.SparseMatrix.from_scipy(W)
Q = tau * (Dm - alpha * Wm)  # pattern union of D and W, computed once
print(Q, "   pattern:", Q.pattern)
first = [(int(i), int(j)) for i, j in zip(Q.pattern.rows[:5], Q.pattern.cols[:5])]
print("(row, col) of the first five stored values:", first)

# %% [markdown]
# A stored off-diagonal value stands for two entries of $Q$: `to_scipy` rebuilds the
# full symmetric matrix.

# %%
point = {tau: 2.0, alpha: 0.9}
Q_dense = Q.to_scipy(Q.data.eval(point)).toarray()
Q_ref = (2.0 * (D - 0.9 * W)).toarray()
print("full matrix rebuilt from the lower triangle, max error:", np.abs(Q_dense - Q_ref).max())
print("stored values:", Q.nnz, "  nonzeros of the full matrix:", np.count_nonzero(Q_ref))

# %% [markdown]
# ## Log-determinant and its gradient
#
# `pms.logdet(Q)` is a PyTensor scalar.  Its gradient goes through the selected inverse
# ($\partial \log\det Q / \partial q_{ij} = w_{ij} (Q^{-1})_{ij}$, see
# {doc}`../theory/derivatives`), so `pytensor.grad` gives exact derivatives in $\tau$
# and $\alpha$.

# %%
ld = pms.logdet(Q)
g_tau, g_alpha = pytensor.grad(ld, [tau, alpha])
f = pytensor.function([tau, alpha], [ld, g_tau, g_alpha])

val, gt, ga = f(2.0, 0.9)
print(f"logdet   pms: {val:.12f}   numpy slogdet: {np.linalg.slogdet(Q_ref)[1]:.12f}")

h = 1e-6
fd_tau = (f(2.0 + h, 0.9)[0] - f(2.0 - h, 0.9)[0]) / (2 * h)
fd_alpha = (f(2.0, 0.9 + h)[0] - f(2.0, 0.9 - h)[0]) / (2 * h)
print(f"d/dtau   pms: {gt:.9f}   finite difference: {fd_tau:.9f}   exact n/tau: {20 / 2.0:.9f}")
print(f"d/dalpha pms: {ga:.9f}   finite difference: {fd_alpha:.9f}")
assert np.isclose(val, np.linalg.slogdet(Q_ref)[1], rtol=1e-12)
assert np.isclose(gt, fd_tau, rtol=1e-6) and np.isclose(ga, fd_alpha, rtol=1e-6)

# %% [markdown]
# The gradient with respect to the raw stored values follows the storage convention:
# perturbing one stored off-diagonal value moves both symmetric entries, so its
# derivative is $2 (Q^{-1})_{ij}$.

# %%
data = pt.vector("data")
Qv = pms.SparseMatrix(Q.pattern, data)
grad_data = pytensor.function([data], pytensor.grad(pms.logdet(Qv), data))
q0 = Q.data.eval(point)
S = np.linalg.inv(Q_ref)
r, c = Q.pattern.rows, Q.pattern.cols
expected = np.where(r == c, 1.0, 2.0) * S[r, c]
print("max |grad - w * inv(Q)[i, j]| over stored values:", np.abs(grad_data(q0) - expected).max())

# %% [markdown]
# ## Solves
#
# `pms.solve(Q, b)` solves $Qx = b$ with the same cached factor, for a vector or an
# $(n, k)$ matrix `b`, and is differentiable in both the values of $Q$ and `b`.

# %%
b = np.random.default_rng(0).normal(size=Q.n)
x = pms.solve(Q, b)
loss = 0.5 * pt.sum(x**2)
f_solve = pytensor.function([tau, alpha], [x, loss, pytensor.grad(loss, alpha)])
x_val, l_val, dl_dalpha = f_solve(2.0, 0.9)
print("solve vs scipy.linalg.solve, max error:", np.abs(x_val - scipy.linalg.solve(Q_ref, b)).max())
fd = (f_solve(2.0, 0.9 + h)[1] - f_solve(2.0, 0.9 - h)[1]) / (2 * h)
print(f"d loss / d alpha  pms: {dl_dalpha:.9f}   finite difference: {fd:.9f}")
assert np.isclose(dl_dalpha, fd, rtol=1e-6)

# %% [markdown]
# ## Selected inverse and marginal variances
#
# `pms.selected_inverse(Q)` returns $Q^{-1}$ *only on the pattern of $Q$*, as a
# `SparseMatrix` with that pattern, computed by the Takahashi recursions on the sparse
# factor; `pms.marginal_variances(Q)` is its diagonal.  Neither forms $Q^{-1}$.

# %%
Sel = pms.selected_inverse(Q)
sel_vals = Sel.data.eval(point)
print("selected inverse vs inv(Q) on the pattern, max error:", np.abs(sel_vals - S[r, c]).max())
mv = pms.marginal_variances(Q).eval(point)
print("marginal variances vs diag(inv(Q)), max error:", np.abs(mv - np.diag(S)).max())

# %% [markdown]
# ## Exact draws
#
# `pms.sample_gmrf(Q, size)` draws from $N(0, Q^{-1})$ as $x = P^\top L^{-\top} z$
# (Rue 2001) for a *constant* `Q`.  Here the sample covariance of 40,000 draws is
# compared with $Q^{-1}$.

# %%
Q_const = sp.csc_matrix(Q_ref)
draws = pms.sample_gmrf(Q_const, size=40_000, rng=1)
C = np.cov(draws.T)
print(
    "draws:",
    draws.shape,
    "  max |cov - inv(Q)| / max |inv(Q)|:",
    np.abs(C - S).max() / np.abs(S).max(),
)

# %% [markdown]
# ## One factorisation per point
#
# Every Op asks one process-wide cache for the factor of `(pattern, values)`.  The
# log-determinant and its gradient at one point share one numeric factorisation; a new
# point needs one more, and the symbolic analysis is done once per pattern.

# %%
pms.clear_cache()
f(1.5, 0.5)
print(pms.cache_info())
f(1.5, 0.6)
print(pms.cache_info())

# %% [markdown]
# ## A lattice with more than $10^5$ nodes
#
# The same code on a $320 \times 320$ lattice ($n = 102{,}400$).  A dense $Q^{-1}$ would
# take 84 GB; the sparse Cholesky factor is printed below.  The first call
# includes the symbolic analysis (once per pattern); later calls at new values need one
# numeric factorisation plus the selected inverse for the gradient.  Timings are from
# the machine that built this page.

# %%
nx = ny = 320
W_big = lattice_adjacency(nx, ny)
D_big = sp.diags(np.asarray(W_big.sum(axis=1)).ravel())
Q_big = tau * (pms.SparseMatrix.from_scipy(D_big) - alpha * pms.SparseMatrix.from_scipy(W_big))
ld_big = pms.logdet(Q_big)
f_big = pytensor.function([tau, alpha], [ld_big, *pytensor.grad(ld_big, [tau, alpha])])
f_val = pytensor.function([tau, alpha], ld_big)

pms.clear_cache()
t0 = time.perf_counter()
f_val(1.0, 0.9)
t_first = time.perf_counter() - t0
timings = {"value": [], "value + gradient": []}
for a in (0.91, 0.92, 0.93):
    t0 = time.perf_counter()
    f_val(1.0, a)
    timings["value"].append(time.perf_counter() - t0)
for a in (0.94, 0.95, 0.96):
    t0 = time.perf_counter()
    v, gt_big, ga_big = f_big(1.0, a)
    timings["value + gradient"].append(time.perf_counter() - t0)
print(f"n = {Q_big.n:,}, stored values = {Q_big.nnz:,}")
# Each call is at new values, so each one factorises.  The value needs only the
# factor; the gradient adds the selected inversion (Takahashi recursions on the factor).
print(f"first call (analysis + factorisation): {t_first:.2f} s")
for k, ts in timings.items():
    print(f"{k:>17}: best of 3 = {min(ts):.2f} s")  # the least disturbed run
print(f"d logdet / d tau = {gt_big:.3f}  (exact n / tau = {Q_big.n / 1.0:.3f})")
print(pms.cache_info())
L_big = pms.cholesky(Q_big.to_scipy(Q_big.data.eval({tau: 1.0, alpha: 0.9}))).L()
print(
    f"Cholesky factor: {L_big.nnz:,} nonzeros, {L_big.nnz * 12 / 1e6:.0f} MB (values + row indices)"
)

# %% [markdown]
# A check that needs no dense matrix: $\log\det(\tau Q_0) = n\log\tau + \log\det Q_0$.

# %%
print(
    "logdet(2 Q) - logdet(Q) =",
    f_val(2.0, 0.9) - f_val(1.0, 0.9),
    "  n log 2 =",
    Q_big.n * np.log(2),
)

# %% [markdown]
# Exact draws and marginal standard deviations come from the same kind of factor on the big
# lattice: one draw from $N(0, Q^{-1})$ at $\tau = 1$, $\alpha = 0.99$ (left), and the
# marginal standard deviations from the selected inverse in the $12 \times 12$ corner
# (right), larger at the border where a node has fewer neighbours.

# %%
point_big = {tau: 1.0, alpha: 0.99}
Q_num = Q_big.to_scipy(Q_big.data.eval(point_big))
field = pms.sample_gmrf(Q_num, rng=3)
sd = np.sqrt(pms.marginal_variances(Q_big).eval(point_big))
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
im0 = axes[0].imshow(field.reshape(nx, ny), cmap="RdBu_r")
axes[0].set_title(r"one exact draw, $n = 102{,}400$")
fig.colorbar(im0, ax=axes[0])
im1 = axes[1].imshow(sd.reshape(nx, ny)[:12, :12], cmap="viridis")
axes[1].set_title(r"$\sqrt{\mathrm{diag}(Q^{-1})}$, top-left $12 \times 12$ corner")
fig.colorbar(im1, ax=axes[1])
plt.show()
