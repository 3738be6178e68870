"""Test matrices: patterns with genuine fill-in, random graphs, disconnected graphs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def lattice_adjacency(nx: int, ny: int | None = None) -> sp.csc_matrix:
    """Binary rook adjacency of an ``nx x ny`` lattice (node ``i * ny + j``)."""
    ny = nx if ny is None else ny
    Tx = sp.diags([np.ones(nx - 1), np.ones(nx - 1)], [-1, 1], shape=(nx, nx))
    Ty = sp.diags([np.ones(ny - 1), np.ones(ny - 1)], [-1, 1], shape=(ny, ny))
    return (sp.kron(Tx, sp.identity(ny)) + sp.kron(sp.identity(nx), Ty)).tocsc()


def car_precision(W, alpha=0.9, tau=1.0) -> sp.csc_matrix:
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    return (tau * (D - alpha * W)).tocsc()


def grid_laplacian(m: int, shift: float = 0.1) -> sp.csc_matrix:
    """2-D lattice graph Laplacian plus ``shift * I``: Cholesky factor has real fill-in."""
    W = lattice_adjacency(m)
    D = sp.diags(np.asarray(W.sum(axis=1)).ravel())
    return (D - W + shift * sp.identity(m * m)).tocsc()


def random_spd(n: int, density: float, rng) -> sp.csc_matrix:
    """Random symmetric diagonally dominant matrix with random weights."""
    A = sp.random(n, n, density=density, random_state=rng, format="csc")
    A = A + A.T
    A.data = -np.abs(A.data)
    A.setdiag(0)
    A.eliminate_zeros()
    d = -np.asarray(A.sum(axis=1)).ravel() + rng.uniform(0.5, 1.5, n)
    return (A + sp.diags(d)).tocsc()


def banded(n: int, bw: int = 3) -> sp.csc_matrix:
    diags = [np.full(n - k, -1.0 / (k + 1)) for k in range(1, bw + 1)]
    A = sp.diags(
        diags + diags, list(range(1, bw + 1)) + [-k for k in range(1, bw + 1)], shape=(n, n)
    )
    return (A + sp.diags(np.full(n, 2.0 * bw))).tocsc()


def block_diagonal(rng) -> sp.csc_matrix:
    """Three disconnected components (one a single node)."""
    return sp.block_diag(
        [grid_laplacian(3), random_spd(7, 0.4, rng), sp.csc_matrix([[2.0]])]
    ).tocsc()


def isolated_node(n: int = 6) -> sp.csc_matrix:
    """A path graph precision with one node that has no off-diagonal entries."""
    A = banded(n - 1, 1).toarray()
    B = np.zeros((n, n))
    B[: n - 1, : n - 1] = A
    B[n - 1, n - 1] = 3.0
    return sp.csc_matrix(B)


def named_matrices(rng):
    """(id, matrix) pairs covering the patterns every Op is tested on."""
    return [
        ("grid5", grid_laplacian(5)),
        ("random30", random_spd(30, 0.1, rng)),
        ("banded20", banded(20, 3)),
        ("blockdiag", block_diagonal(rng)),
        ("n1", sp.csc_matrix([[2.5]])),
        ("n2", sp.csc_matrix([[2.0, -0.7], [-0.7, 1.5]])),
        ("isolated", isolated_node()),
    ]


MATRIX_IDS = ["grid5", "random30", "banded20", "blockdiag", "n1", "n2", "isolated"]


def matrix(name: str):
    return dict(named_matrices(np.random.default_rng(7)))[name]
