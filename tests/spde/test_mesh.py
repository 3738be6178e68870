"""Mesh construction and the projector A (pymc_sparse.spde.mesh)."""

import numpy as np
import pytest

from pymc_sparse.spde.mesh import TriangleMesh, mesh_from_points


@pytest.fixture(scope="module")
def cloud_mesh():
    rng = np.random.default_rng(1)
    loc = rng.uniform(size=(200, 2))
    return loc, mesh_from_points(loc, max_edge=(0.05, 0.15), extension=0.3, min_angle=25)


def test_quality_and_edge_lengths(cloud_mesh):
    _, mesh = cloud_mesh
    assert mesh.angles().min() >= 25 - 1e-9
    e = mesh.edges
    mid = 0.5 * (mesh.nodes[e[:, 0]] + mesh.nodes[e[:, 1]])
    lengths = mesh.edge_lengths()
    # Edges inside the hull of the locations obey the inner bound, every edge the outer one.
    inside = np.all((mid > 0.1) & (mid < 0.9), axis=1)
    assert lengths[inside].max() <= 0.05 * 1.01 + 1e-12
    assert lengths.max() <= 0.15 * 1.01 + 1e-12
    # The outer extension reaches `extension` beyond the locations.
    assert mesh.nodes.min() < -0.25 and mesh.nodes.max() > 1.25


def test_nodes_at_locations(cloud_mesh):
    loc, mesh = cloud_mesh
    d = np.min(np.linalg.norm(loc[:, None] - mesh.nodes[None], axis=2), axis=1)
    assert d.max() <= 0.05 / 5 + 1e-12  # within the default cutoff


def test_projector_rows_and_linear_reproduction(cloud_mesh, rng):
    _, mesh = cloud_mesh
    x = rng.uniform(-0.1, 1.1, size=(500, 2))
    A = mesh.projector(x)
    assert A.shape == (500, mesh.n)
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert A.min() >= 0 and np.diff(A.indptr).max() <= 3
    for coef in ([1.0, 0.0], [0.0, 1.0], [2.0, -3.0]):
        u = mesh.nodes @ coef + 0.5
        np.testing.assert_allclose(A @ u, x @ coef + 0.5, atol=1e-12)
    # At a node the row is that node's indicator.
    B = mesh.projector(mesh.nodes[:10])
    np.testing.assert_allclose(B[:, :10].toarray(), np.eye(10), atol=1e-12)


def test_projector_outside(cloud_mesh):
    _, mesh = cloud_mesh
    far = np.array([[0.5, 0.5], [50.0, 50.0]])
    with pytest.raises(ValueError, match="outside the mesh"):
        mesh.projector(far)
    A = mesh.projector(far, outside="zero")
    assert A[1].nnz == 0 and abs(A[0].sum() - 1) < 1e-12


def test_boundary_polygon_non_convex(rng):
    L = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], dtype=float)
    loc = rng.uniform(0, 1, size=(30, 2))
    mesh = mesh_from_points(loc, boundary=L[::-1], max_edge=(0.2, 0.5), extension=0.5)
    assert mesh.angles().min() >= 25 - 1e-9
    # The fine spacing covers the whole polygon, not just the hull of the locations.
    A = mesh.projector(np.array([[1.9, 0.5], [0.5, 1.9]]))
    assert A.shape == (2, mesh.n)
    with pytest.raises(ValueError, match="outside `boundary`"):
        mesh_from_points(np.array([[3.0, 3.0]]), boundary=L)


def test_triangle_mesh_validation():
    nodes = [[0, 0], [1, 0], [0, 1], [1, 1]]
    m = TriangleMesh(nodes, [[0, 2, 1], [1, 2, 3]])  # first triangle clockwise
    assert np.all(m.areas > 0)
    assert set(map(tuple, m.triangles[0:1].tolist())) == {(0, 1, 2)}
    with pytest.raises(ValueError, match="zero area"):
        TriangleMesh([[0, 0], [1, 0], [2, 0]], [[0, 1, 2]])
    with pytest.raises(ValueError, match="belong to no triangle"):
        TriangleMesh([*nodes, [5, 5]], [[0, 1, 2], [1, 3, 2]])
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        mesh_from_points(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="max_edge"):
        mesh_from_points(np.array([[0, 0], [1, 0], [1, 1.0]]), max_edge=(0.5, 0.1))
