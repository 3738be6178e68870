"""Finite-element matrices against hand computations (pymc_sparse.spde.fem)."""

import numpy as np
import pytest

from pymc_sparse.spde.fem import fem_matrices
from pymc_sparse.spde.mesh import TriangleMesh, mesh_from_points


def test_single_right_triangle():
    f = fem_matrices(TriangleMesh([[0, 0], [1, 0], [0, 1]], [[0, 1, 2]]))
    np.testing.assert_allclose(f.c, [1 / 6] * 3, atol=1e-15)
    G = np.array([[1.0, -0.5, -0.5], [-0.5, 0.5, 0.0], [-0.5, 0.0, 0.5]])
    np.testing.assert_allclose(f.G.toarray(), G, atol=1e-14)


def test_unit_square_two_triangles():
    f = fem_matrices(TriangleMesh([[0, 0], [1, 0], [0, 1], [1, 1]], [[0, 1, 2], [1, 3, 2]]))
    np.testing.assert_allclose(f.c, [1 / 6, 1 / 3, 1 / 3, 1 / 6], atol=1e-15)
    G = np.array([[1, -0.5, -0.5, 0], [-0.5, 1, 0, -0.5], [-0.5, 0, 1, -0.5], [0, -0.5, -0.5, 1]])
    np.testing.assert_allclose(f.G.toarray(), G, atol=1e-14)


def _cotangent_stiffness(nodes, tri):
    """Independent reference: G_ij = -(cot a_ij + cot b_ij) / 2, rows summing to zero."""
    n = nodes.shape[0]
    G = np.zeros((n, n))
    for t in tri:
        for k in range(3):
            i, j, o = t[k], t[(k + 1) % 3], t[(k + 2) % 3]
            u, v = nodes[i] - nodes[o], nodes[j] - nodes[o]
            cot = np.dot(u, v) / abs(u[0] * v[1] - u[1] * v[0])
            G[i, j] -= cot / 2
            G[j, i] -= cot / 2
    G[np.diag_indices(n)] = -G.sum(1)
    return G


def test_random_mesh_against_cotangent_formula(rng):
    mesh = mesh_from_points(rng.uniform(size=(15, 2)), max_edge=(0.3, 0.6), extension=0.3)
    f = fem_matrices(mesh)
    np.testing.assert_allclose(
        f.G.toarray(), _cotangent_stiffness(mesh.nodes, mesh.triangles), atol=1e-12
    )
    np.testing.assert_allclose(f.c.sum(), mesh.areas.sum(), rtol=1e-13)
    np.testing.assert_allclose(f.G @ np.ones(mesh.n), 0.0, atol=1e-12)
    # Energy of a linear function: int |grad u|^2 = |a|^2 * area.
    a = np.array([0.7, -1.3])
    u = mesh.nodes @ a
    np.testing.assert_allclose(u @ (f.G @ u), a @ a * mesh.areas.sum(), rtol=1e-12)


def test_type_error():
    with pytest.raises(TypeError, match="TriangleMesh"):
        fem_matrices(np.eye(3))
