r"""Triangular meshes for SPDE fields: construction from point locations and the projector.

:func:`mesh_from_points` builds a refined Delaunay triangulation covering the locations:

1. nodes at the (de-duplicated, ``cutoff``) locations and along the boundary of the
   *inner domain* (the convex hull of the locations, or a given polygon), spaced
   ``max_edge[0]``;
2. an equilateral (hexagonal) fill of the inner domain at spacing ``max_edge[0]`` and of
   an *outer extension* of width ``extension`` at spacing ``max_edge[1]``, whose outer
   boundary (the convex hull of the inner domain grown by a disc) is slightly bulged so
   that no three boundary nodes are collinear (Qhull would otherwise drop them);
3. the Delaunay triangulation of all nodes (``scipy.spatial.Delaunay``, Qhull), then
   Delaunay refinement in the manner of Chew and Ruppert: the circumcentres of
   triangles with an angle below ``min_angle`` or an edge longer than the local
   ``max_edge`` are inserted, a batch per round, until none is left or ``max_rounds``.
   A circumcentre is at distance :math:`R` from every node (the circumcircle of a
   Delaunay triangle is empty), so insertions never create short edges.

The outer extension pushes the SPDE's boundary effect (its Neumann condition inflates
the variance within about one range of the boundary) away from the data: make it at least
one practical range wide.  A boundary polygon only sets where the fine spacing applies;
its segments are not constrained edges (no barrier models).

No maintained, permissively licensed Python library does this: Shewchuk's *Triangle*
(wrapped by ``triangle`` and ``meshpy``) is free for non-commercial use only and Gmsh is
GPL; scikit-fem (BSD-3, used for assembly in :mod:`pymc_sparse.spde.fem`) only builds
structured meshes.  The refinement is therefore written here on top of SciPy's Qhull.

:meth:`TriangleMesh.projector` returns the sparse ``m x n`` matrix :math:`A` of
barycentric (P1 basis) weights of arbitrary locations: each row has the three weights of
the triangle containing the location, which sum to 1 and reproduce linear functions.

References
----------
.. [1] Lindgren, F., Rue, H. and Lindström, J. (2011). An explicit link between Gaussian
   fields and Gaussian Markov random fields: the stochastic partial differential equation
   approach. *J. R. Stat. Soc. B* 73(4), 423-498.
.. [2] Ruppert, J. (1995). A Delaunay refinement algorithm for quality 2-dimensional mesh
   generation. *J. Algorithms* 18(3), 548-585.
.. [3] Chew, L. P. (1989). Guaranteed-quality triangular meshes. Technical report
   TR-89-983, Cornell University.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.spatial import ConvexHull, Delaunay, cKDTree

__all__ = ["TriangleMesh", "mesh_from_points"]


def _as_points(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"`{name}` must be an (m, 2) array of x, y coordinates, got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or infinite coordinates.")
    return x


def _signed_areas(nodes: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a, b, c = nodes[tri[:, 0]], nodes[tri[:, 1]], nodes[tri[:, 2]]
    return 0.5 * (
        (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    )


class TriangleMesh:
    r"""A conforming triangulation of the plane: ``nodes`` ``(n, 2)``, ``triangles`` ``(t, 3)``.

    Triangles are stored counter-clockwise (reoriented if given clockwise).

    Parameters
    ----------
    nodes : array_like, shape (n, 2)
        Node coordinates.
    triangles : array_like of int, shape (t, 3)
        Node indices of each triangle.
    inner : array_like, shape (k, 2), optional
        Polygon of the inner (finely meshed) domain, kept for plots and diagnostics.

    Attributes
    ----------
    n : int
        Number of nodes (the order of the SPDE precision).
    areas : ndarray
        Triangle areas.
    """

    def __init__(self, nodes, triangles, inner=None):
        nodes = _as_points(nodes, "nodes")
        tri = np.asarray(triangles)
        if tri.ndim != 2 or tri.shape[1] != 3 or tri.dtype.kind not in "iu":
            raise ValueError(f"`triangles` must be a (t, 3) integer array, got {tri.shape}.")
        tri = tri.astype(np.int64)
        if tri.size and (tri.min() < 0 or tri.max() >= nodes.shape[0]):
            raise ValueError("`triangles` refers to nodes outside 0..n-1.")
        area = _signed_areas(nodes, tri)
        scale = max(float(np.ptp(nodes, axis=0).max()), 1e-300)
        if np.any(np.abs(area) <= 1e-14 * scale**2):
            k = int(np.flatnonzero(np.abs(area) <= 1e-14 * scale**2)[0])
            raise ValueError(f"Triangle {k} ({tri[k].tolist()}) has zero area.")
        tri = np.where((area < 0)[:, None], tri[:, [0, 2, 1]], tri)
        used = np.zeros(nodes.shape[0], bool)
        used[tri.ravel()] = True
        if not used.all():
            raise ValueError(
                f"{int((~used).sum())} node(s) belong to no triangle (first: "
                f"{int(np.flatnonzero(~used)[0])}); remove them."
            )
        self.nodes = nodes
        self.triangles = tri
        self.areas = np.abs(area)
        self.inner = None if inner is None else _as_points(inner, "inner")
        for a in (self.nodes, self.triangles, self.areas):
            a.flags.writeable = False
        self._tree = None

    @property
    def n(self) -> int:
        """Number of nodes."""
        return int(self.nodes.shape[0])

    def __repr__(self) -> str:
        return f"TriangleMesh(n={self.n}, triangles={self.triangles.shape[0]})"

    # -- quality ----------------------------------------------------------------------
    @property
    def edges(self) -> np.ndarray:
        """Unique undirected edges ``(e, 2)``, smaller index first."""
        e = np.sort(self.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        return np.unique(e, axis=0)

    def edge_lengths(self) -> np.ndarray:
        """Lengths of :attr:`edges`."""
        e = self.edges
        return np.linalg.norm(self.nodes[e[:, 0]] - self.nodes[e[:, 1]], axis=1)

    def angles(self) -> np.ndarray:
        """Interior angles in degrees, ``(t, 3)`` (the angle at each vertex)."""
        return _angles(self.nodes, self.triangles)

    # -- projector --------------------------------------------------------------------
    def barycentric(self, locations, *, outside: str = "raise"):
        """Containing triangle and barycentric coordinates of each location.

        Returns ``(triangle, weights)``; ``triangle`` is -1 and ``weights`` 0 for a
        location outside the mesh when ``outside="zero"``.
        """
        if outside not in ("raise", "zero"):
            raise ValueError(f"`outside` must be 'raise' or 'zero', got {outside!r}.")
        x = _as_points(locations, "locations")
        p, t = self.nodes, self.triangles
        if self._tree is None:
            self._tree = cKDTree(p[t].mean(axis=1))
        a = p[t[:, 0]]
        # Affine map of each triangle: lambda_{1,2} = Minv (x - a), lambda_0 = 1 - sum.
        e1, e2 = p[t[:, 1]] - a, p[t[:, 2]] - a
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        minv = np.stack([e2[:, 1], -e2[:, 0], -e1[:, 1], e1[:, 0]], axis=1) / det[:, None]
        tri = np.full(x.shape[0], -1, np.int64)
        lam = np.zeros((x.shape[0], 3))
        todo = np.arange(x.shape[0])
        ntri = t.shape[0]
        for k in (4, 16, 64, ntri):
            if not todo.size:
                break
            k = min(k, ntri)
            for chunk in np.array_split(todo, max(1, todo.size * k // 2_000_000 + 1)):
                cand = self._tree.query(x[chunk], k=k)[1].reshape(chunk.size, k)
                d = x[chunk][:, None, :] - a[cand]
                m = minv[cand]
                l1 = m[..., 0] * d[..., 0] + m[..., 1] * d[..., 1]
                l2 = m[..., 2] * d[..., 0] + m[..., 3] * d[..., 1]
                l0 = 1.0 - l1 - l2
                worst = np.minimum(np.minimum(l0, l1), l2)
                best = np.argmax(worst, axis=1)
                ok = worst[np.arange(chunk.size), best] >= -1e-10
                rows = chunk[ok]
                tri[rows] = cand[ok, best[ok]]
                b = best[ok]
                i = np.flatnonzero(ok)
                lam[rows] = np.clip(np.stack([l0[i, b], l1[i, b], l2[i, b]], axis=1), 0, 1)
            todo = todo[tri[todo] < 0]
        lam /= np.where(lam.sum(1) > 0, lam.sum(1), 1.0)[:, None]
        if todo.size and outside == "raise":
            raise ValueError(
                f"{todo.size} location(s) lie outside the mesh (first: {x[todo[0]].tolist()}); "
                "build the mesh from these locations too, or pass outside='zero' for zero rows."
            )
        return tri, lam

    def projector(self, locations, *, outside: str = "raise") -> sp.csr_matrix:
        r"""Sparse ``m x n`` matrix :math:`A` with :math:`(A u)_k = u(s_k)` for P1 fields.

        Row ``k`` holds the barycentric weights of location :math:`s_k` in its triangle
        (three non-zeros summing to 1; fewer on an edge or node).  ``outside="zero"``
        gives zero rows for locations outside the mesh instead of raising.
        """
        tri, lam = self.barycentric(locations, outside=outside)
        ok = tri >= 0
        rows = np.repeat(np.flatnonzero(ok), 3)
        cols = self.triangles[tri[ok]].ravel()
        A = sp.csr_matrix((lam[ok].ravel(), (rows, cols)), shape=(tri.size, self.n))
        A.eliminate_zeros()
        return A


def _angles(nodes, tri):
    p = nodes[tri]
    out = np.empty(tri.shape)
    for i in range(3):
        u = p[:, (i + 1) % 3] - p[:, i]
        v = p[:, (i + 2) % 3] - p[:, i]
        cosang = np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
        out[:, i] = np.degrees(np.arccos(np.clip(cosang, -1, 1)))
    return out


# -- polygon helpers ---------------------------------------------------------------------
def _inside(x, poly):
    """Even-odd rule: whether each point of ``x`` lies inside the closed polygon."""
    inside = np.zeros(x.shape[0], bool)
    px, py = poly[:, 0], poly[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    for ax, ay, bx, by in zip(px, py, qx, qy):
        cross = (ay > x[:, 1]) != (by > x[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = ax + (x[:, 1] - ay) * (bx - ax) / (by - ay)
        inside ^= cross & (x[:, 0] < xint)
    return inside


def _distance_to_boundary(x, poly):
    """Distance from each point to the polygon's boundary (segments), chunked."""
    a = poly
    b = np.roll(poly, -1, axis=0)
    ab = b - a
    L2 = np.maximum(np.sum(ab * ab, 1), 1e-300)
    out = np.empty(x.shape[0])
    step = max(1, 4_000_000 // max(1, a.shape[0]))
    for s in range(0, x.shape[0], step):
        d = x[s : s + step, None, :] - a[None]
        t = np.clip(np.sum(d * ab[None], 2) / L2, 0.0, 1.0)
        r = d - t[..., None] * ab[None]
        out[s : s + step] = np.sqrt(np.min(np.sum(r * r, 2), axis=1))
    return out


def _resample(poly, h, bulge=0.0):
    """Points along the closed polygon at spacing <= h (vertices kept).

    ``bulge`` > 0 pushes the points of each edge outward (counter-clockwise polygon) on a
    parabola of height ``bulge * length``, so that the polygon becomes strictly convex.
    """
    out = []
    b = np.roll(poly, -1, axis=0)
    for p, q in zip(poly, b):
        d = q - p
        L = float(np.hypot(*d))
        k = max(1, math.ceil(L / h))
        t = np.arange(k) / k
        pts = p + t[:, None] * d
        if bulge:
            normal = np.array([d[1], -d[0]]) / max(L, 1e-300)  # outward for CCW
            pts = pts + (bulge * L * 4 * t * (1 - t))[:, None] * normal
        out.append(pts)
    return np.concatenate(out)


def _hex_fill(lo, hi, h):
    """Equilateral lattice of spacing ``h`` covering the box ``[lo, hi]``."""
    dy = h * math.sqrt(3) / 2
    ny = math.ceil((hi[1] - lo[1]) / dy) + 1
    nx = math.ceil((hi[0] - lo[0]) / h) + 2
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    x = lo[0] + h * (i + 0.5 * (j % 2)) - h / 2
    y = lo[1] + dy * j
    return np.column_stack([x.ravel(), y.ravel()])


def _thin(points, cutoff):
    """Greedy de-duplication: drop points closer than ``cutoff`` to an earlier kept one."""
    if cutoff <= 0 or points.shape[0] < 2:
        return points
    tree = cKDTree(points)
    pairs = tree.query_pairs(cutoff, output_type="ndarray")
    if not pairs.size:
        return points
    nbrs = sp.coo_matrix(
        (np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(len(points),) * 2
    ).tocsr()
    keep = np.ones(len(points), bool)
    for i in range(len(points)):  # pairs are (i < j): a kept i removes its later neighbours
        if keep[i]:
            keep[nbrs.indices[nbrs.indptr[i] : nbrs.indptr[i + 1]]] = False
    return points[keep]


def _circumcentres(p, t):
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    ba, ca = b - a, c - a
    d = 2 * (ba[:, 0] * ca[:, 1] - ba[:, 1] * ca[:, 0])
    nb, nc = np.sum(ba * ba, 1), np.sum(ca * ca, 1)
    ux = (ca[:, 1] * nb - ba[:, 1] * nc) / d
    uy = (ba[:, 0] * nc - ca[:, 0] * nb) / d
    return a + np.column_stack([ux, uy]), np.hypot(ux, uy)


def _pair(v, name):
    if np.ndim(v) == 0:
        return float(v), float(v)
    v = tuple(float(u) for u in v)
    if len(v) != 2:
        raise ValueError(f"`{name}` must be a number or a pair (inner, outer), got {v!r}.")
    return v


def mesh_from_points(
    locations,
    *,
    boundary=None,
    max_edge=None,
    extension=None,
    min_angle: float = 25.0,
    cutoff=None,
    max_rounds: int = 60,
) -> TriangleMesh:
    r"""Refined triangulation covering ``locations``, with an outer extension.

    Parameters
    ----------
    locations : array_like, shape (m, 2)
        Point locations (observation sites); a node is placed at each (after merging
        locations closer than ``cutoff``).
    boundary : array_like, shape (k, 2), optional
        Polygon of the study region (any orientation, not closed explicitly).  Default:
        the convex hull of ``locations``.  The mesh is fine inside it.
    max_edge : float or (float, float), optional
        Largest edge length inside the region and in the outer extension.  Default:
        the region's bounding-box diagonal / 25 inside, three times that outside.  A
        number means both.
    extension : float, optional
        Width of the outer extension; default a quarter of that diagonal.  Make
        it at least the largest practical range you expect: the SPDE's Neumann boundary
        inflates the variance within about one range of the mesh boundary.
    min_angle : float
        Target smallest angle in degrees (at most 30; the refinement stops after
        ``max_rounds`` rounds regardless, see ``mesh.angles()``).
    cutoff : float, optional
        Locations closer than this share one node; default ``max_edge[0] / 5``.
    max_rounds : int
        Cap on the refinement rounds.

    Returns
    -------
    TriangleMesh
        Its :meth:`~TriangleMesh.projector` maps nodal values to any location inside.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mesh = mesh_from_points(rng.uniform(size=(50, 2)), max_edge=(0.1, 0.3))
    >>> bool(mesh.angles().min() > 20)
    True
    """
    loc = _as_points(locations, "locations")
    if loc.shape[0] < 3 and boundary is None:
        raise ValueError("Give at least 3 locations, or a `boundary` polygon.")
    if not 0 < min_angle <= 33:
        raise ValueError(f"`min_angle` must be in (0, 33] degrees, got {min_angle}.")
    if boundary is None:
        hull = ConvexHull(loc)
        inner = loc[hull.vertices]  # counter-clockwise
    else:
        inner = _as_points(boundary, "boundary")
        if inner.shape[0] < 3:
            raise ValueError("`boundary` needs at least 3 vertices.")
        if np.allclose(inner[0], inner[-1]):
            inner = inner[:-1]
        if (
            _signed_areas(inner, np.array([[0, i, i + 1] for i in range(1, len(inner) - 1)])).sum()
            < 0
        ):
            inner = inner[::-1]
        if not np.all(_inside(loc, inner) | (_distance_to_boundary(loc, inner) < 1e-12)):
            raise ValueError("Some locations lie outside `boundary`; enlarge the polygon.")
    diam = float(np.hypot(*np.ptp(inner, axis=0)))  # the bounding box diagonal: a scale only
    if max_edge is None:
        max_edge = (diam / 25, 3 * diam / 25)
    h_in, h_out = _pair(max_edge, "max_edge")
    if not 0 < h_in <= h_out:
        raise ValueError(f"`max_edge` must satisfy 0 < inner <= outer, got {max_edge!r}.")
    ext = 0.25 * diam if extension is None else float(extension)
    if ext <= 0:
        raise ValueError(f"`extension` must be positive, got {extension!r}.")
    cutoff = h_in / 5 if cutoff is None else float(cutoff)

    # Outer boundary: the hull of the region grown by a disc of radius `ext`, its edges
    # split to at most h_out (straight pieces; conformity is kept by segment splitting).
    ang = np.linspace(0, 2 * np.pi, 17)[:-1]
    grown = (inner[:, None, :] + ext * np.stack([np.cos(ang), np.sin(ang)], 1)[None]).reshape(-1, 2)
    outer = _thin(grown[ConvexHull(grown).vertices], 0.5 * h_out)
    seg_a = _resample(outer, h_out)
    fixed = _thin(np.concatenate([loc, _resample(inner, h_in)]), cutoff)
    fine = _hex_fill(inner.min(0), inner.max(0), h_in)
    fine = fine[_inside(fine, inner) & (_distance_to_boundary(fine, inner) > 0.5 * h_in)]
    coarse = _hex_fill(outer.min(0), outer.max(0), h_out)
    coarse = coarse[
        _inside(coarse, outer)
        & ~_inside(coarse, inner)
        & (_distance_to_boundary(coarse, inner) > 0.7 * h_out)
        & (_distance_to_boundary(coarse, outer) > 0.6 * h_out)
    ]
    if fine.size:
        fine = fine[cKDTree(fixed).query(fine)[0] > 0.5 * h_in]
    interior = np.concatenate([fixed, fine, coarse])
    is_in = _inside(interior, inner) | (_distance_to_boundary(interior, inner) < 0.5 * h_in)
    # Far points keep the outer boundary off Qhull's convex hull (collinear hull points
    # would be dropped); triangles outside the outer polygon are removed at the end.
    lo, hi = outer.min(0), outer.max(0)
    pad = 2.0 * (hi - lo).max()
    far = np.array(
        [
            [lo[0] - pad, lo[1] - pad],
            [hi[0] + pad, lo[1] - pad],
            [hi[0] + pad, hi[1] + pad],
            [lo[0] - pad, hi[1] + pad],
        ]
    )
    rounds = 0
    while True:
        seg_b = np.roll(seg_a, -1, axis=0)
        pts = np.concatenate([far, seg_a, interior])
        dt = Delaunay(pts)
        t = dt.simplices
        t = t[_inside(pts[t].mean(1), seg_a)]
        if rounds == max_rounds:
            break
        rounds += 1
        ang_t = _angles(pts, t)
        e = np.linalg.norm(pts[t[:, [1, 2, 0]]] - pts[t], axis=2).max(1)
        node_in = np.concatenate([np.zeros(4 + seg_a.shape[0], bool), is_in])
        h_t = np.where(node_in[t].any(1), h_in, h_out)
        bad = (ang_t.min(1) < min_angle) | (e > 1.01 * h_t)
        if not bad.any():
            break
        cc, R = _circumcentres(pts, t[bad])
        order = np.argsort(-R)
        cc, R = cc[order], R[order]
        # Ruppert: a circumcentre inside the diametral circle of a boundary segment (or
        # outside the domain) splits that segment at its midpoint instead.
        mid, half = 0.5 * (seg_a + seg_b), 0.5 * np.linalg.norm(seg_b - seg_a, axis=1)
        dist, j = cKDTree(mid).query(cc, k=min(4, mid.shape[0]))
        enc = dist < half[j]
        split = np.unique(j[enc])
        inside = _inside(cc, seg_a)
        out_seg = j[~inside, 0]
        split = np.unique(np.concatenate([split, out_seg]))
        ok = inside & ~enc.any(1)
        cc, R = cc[ok], R[ok]
        keep = np.ones(cc.shape[0], bool)
        if cc.shape[0] > 1:
            # No insertion within half the circumradius of a larger one (sorted by R): one
            # vectorised pass; triangles left bad are treated in the next round.
            pairs = cKDTree(cc).query_pairs(0.5 * float(R.max()), output_type="ndarray")
            if pairs.size:
                i, k = pairs.min(1), pairs.max(1)
                close = np.linalg.norm(cc[i] - cc[k], axis=1) < 0.5 * R[i]
                keep[k[close]] = False
        cc = cc[keep]
        if split.size:
            new = np.insert(seg_a, split + 1, mid[split], axis=0)
            seg_a = new
        interior = np.concatenate([interior, cc])
        is_in = np.concatenate([is_in, _inside(cc, inner)])
        if not cc.size and not split.size:
            break
    used = np.zeros(pts.shape[0], bool)
    used[t.ravel()] = True
    remap = np.cumsum(used) - 1
    return TriangleMesh(pts[used], remap[t], inner=inner)
