"""Fast Delaunay refinement (pymc_sparse.spde.refine) and large meshes from mesh_from_points."""

import numpy as np
import pytest
from scipy.spatial import Delaunay

from pymc_sparse.spde.mesh import mesh_from_points
from pymc_sparse.spde.refine import (
    LocalDelaunay,
    circumcentres,
    hex_fill,
    inside_polygon,
    project_to_polygon,
)


def _check_delaunay(pts, tri, hull_area):
    """Empty circumcircles (up to rounding), no overlap (areas sum to the hull's), Euler count."""
    cc, R = circumcentres(pts, tri)
    d = Delaunay(pts)  # only for the hull size: 2 n - 2 - h triangles
    n_hull = np.unique(d.convex_hull).size
    assert tri.shape[0] == 2 * pts.shape[0] - 2 - n_hull
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    area = 0.5 * np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])
    np.testing.assert_allclose(area.sum(), hull_area, rtol=1e-10)
    from scipy.spatial import cKDTree

    inside = cKDTree(pts).query_ball_point(cc, R * (1 - 1e-7), return_length=True)
    assert inside.max() == 0


@pytest.mark.parametrize("kind", ["random", "lattice"])
def test_local_delaunay_matches_full_triangulation(kind, rng):
    box = np.array([[-1, -1], [2, -1], [2, 2], [-1, 2]], float)
    if kind == "random":
        base = rng.uniform(size=(400, 2))
    else:  # co-circular points everywhere: the degenerate case of the cavity update
        base = hex_fill([0, 0], [1, 1], 0.07)
        base = base[np.all((base > 0) & (base < 1), axis=1)]
    dt = LocalDelaunay(np.concatenate([box, base]), cell=0.1)
    for k in (1, 5, 60, 300):
        x = rng.uniform(0.05, 0.95, size=(k, 2))
        if kind == "lattice":  # circumcentres of lattice triangles: exactly co-circular
            x = dt.cc[rng.choice(np.flatnonzero((dt.tri >= 4).all(1)), k, replace=False)]
            x = np.unique(x.round(9), axis=0)  # two triangles of a co-circular quad
        kept, new = dt.insert(x)
        assert kept is None or dt.tri.shape[0] == kept.size + 2 * x.shape[0]
        assert kept is None or new.size == (~kept).sum() + 2 * x.shape[0]
        _check_delaunay(dt.pts, dt.tri, 9.0)
    assert dt.fallbacks == 0


@pytest.fixture(scope="module")
def big_mesh():
    rng = np.random.default_rng(3)
    loc = rng.uniform(0, 10, size=(2000, 2))
    return loc, mesh_from_points(loc, max_edge=(0.1, 0.4), extension=2.0)


def test_mesh_1e4_nodes_quality(big_mesh):
    _, mesh = big_mesh
    assert 10_000 <= mesh.n <= 40_000
    assert mesh.angles().min() >= 25 - 1e-9
    e = mesh.edges
    mid = 0.5 * (mesh.nodes[e[:, 0]] + mesh.nodes[e[:, 1]])
    lengths = mesh.edge_lengths()
    hull_inner = np.all((mid > 0.3) & (mid < 9.7), axis=1)  # well inside the convex hull
    assert lengths[hull_inner].max() <= 0.1 * 1.01 + 1e-12
    assert lengths.max() <= 0.4 * 1.01 + 1e-12
    # Coarser outside: the outer ring of the extension uses the outer spacing.
    far = np.all(np.abs(mid - 5) > 6.2, axis=1)
    assert np.median(lengths[far]) > 0.3
    assert mesh.nodes.min() < -1.9 and mesh.nodes.max() > 11.9


def test_mesh_1e4_nodes_locations_and_projector(big_mesh, rng):
    loc, mesh = big_mesh
    d = mesh.projector(loc)  # every location inside the mesh
    assert d.shape == (loc.shape[0], mesh.n)
    from scipy.spatial import cKDTree

    assert cKDTree(mesh.nodes).query(loc)[0].max() <= 0.1 / 5 + 1e-12
    x = rng.uniform(-1.0, 11.0, size=(3000, 2))
    A = mesh.projector(x)
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    for coef in ([1.0, 0.0], [0.0, 1.0], [2.0, -3.0]):
        u = mesh.nodes @ coef + 0.5
        np.testing.assert_allclose(A @ u, x @ coef + 0.5, atol=1e-12)


def _boundary_covered(mesh, poly):
    """Total length of mesh edges lying on each polygon edge."""
    e = mesh.edges
    a, b = mesh.nodes[e[:, 0]], mesh.nodes[e[:, 1]]
    out = []
    for j in range(len(poly)):
        p, u = poly[j], poly[(j + 1) % len(poly)] - poly[j]

        def on(x, p=p, u=u):
            r = x - p
            return (np.abs(u[0] * r[:, 1] - u[1] * r[:, 0]) < 1e-9 * np.hypot(*u)) & (
                (r @ u > -1e-9) & (r @ u < u @ u + 1e-9)
            )

        sel = on(a) & on(b)
        out.append(np.linalg.norm(a[sel] - b[sel], axis=1).sum() / np.hypot(*u))
    return np.array(out)


def test_boundary_polygon_enforced(rng):
    U = np.array([[0, 0], [3, 0], [3, 3], [2, 3], [2, 0.6], [1, 0.6], [1, 3], [0, 3]], float)
    loc = rng.uniform(0, 1, size=(40, 2)) * [0.9, 0.5] + 0.02
    loc = np.concatenate([loc, [[1.5, 0.6], [0.0, 1.5], [2.5, 0.6 - 1e-3]]])  # on / near edges
    mesh = mesh_from_points(loc, boundary=U[::-1], max_edge=(0.1, 0.3), extension=0.3)
    assert mesh.angles().min() >= 25 - 1e-9
    # The polygon's edges are unions of mesh edges (split where locations sit on them).
    np.testing.assert_allclose(_boundary_covered(mesh, U), 1.0, atol=1e-9)
    cen = mesh.nodes[mesh.triangles].mean(1)
    ins = inside_polygon(cen, U)
    tri_len = np.linalg.norm(
        mesh.nodes[mesh.triangles[:, [1, 2, 0]]] - mesh.nodes[mesh.triangles], axis=2
    ).max(1)
    assert tri_len[ins].max() <= 0.1 * 1.01 + 1e-12  # fine inside the polygon only
    # Triangles farther than `extension` from the polygon are removed: the pocket is open.
    dist = project_to_polygon(cen, U)[0]
    assert dist[~ins].max() <= 0.3 + 1e-9
    A = mesh.projector(np.array([[1.5, 0.75], [1.5, 2.9]]), outside="zero")
    assert A[0].nnz > 0 and A[1].nnz == 0
    np.testing.assert_allclose(mesh.projector(loc).sum(1), 1.0, atol=1e-12)


def test_sharp_corner_and_round_cap(rng):
    wedge = np.array([[0, 0], [2, 0], [2, 0.5]], float)  # a 14 degree corner at the origin
    loc = np.array([[1.5, 0.2], [1.8, 0.3]])
    mesh = mesh_from_points(loc, boundary=wedge, max_edge=(0.1, 0.3), extension=0.4)
    ang = mesh.angles()
    corner_tri = np.any(np.linalg.norm(mesh.nodes[mesh.triangles], axis=2) < 1e-12, axis=1)
    assert corner_tri.any() and ang[~corner_tri].min() >= 25 - 1e-9  # only the corner is sharp
    np.testing.assert_allclose(_boundary_covered(mesh, wedge), 1.0, atol=1e-9)
    with pytest.warns(UserWarning, match="max_rounds"):
        mesh_from_points(rng.uniform(size=(300, 2)), max_edge=(0.02, 0.1), max_rounds=1)


@pytest.mark.slow
def test_mesh_1e5_nodes():
    rng = np.random.default_rng(0)
    loc = rng.uniform(0, 10, size=(10_000, 2))
    mesh = mesh_from_points(loc, max_edge=(0.05, 0.2), extension=3.0)
    assert 80_000 <= mesh.n <= 150_000
    assert mesh.angles().min() >= 25 - 1e-9
    e = mesh.edges
    mid = 0.5 * (mesh.nodes[e[:, 0]] + mesh.nodes[e[:, 1]])
    inner = np.all((mid > 0.3) & (mid < 9.7), axis=1)
    assert mesh.edge_lengths()[inner].max() <= 0.05 * 1.01 + 1e-12
    A = mesh.projector(loc)
    np.testing.assert_allclose(A @ mesh.nodes[:, 0], loc[:, 0], atol=1e-12)
