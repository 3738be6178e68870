r"""Triangular meshes for SPDE fields: construction from point locations and the projector.

:func:`mesh_from_points` builds a refined Delaunay triangulation covering the locations:

1. nodes at the (de-duplicated, ``cutoff``) locations and along the boundary of the
   *inner domain* :math:`P` (the convex hull of the locations, or a given polygon),
   spaced ``max_edge[0]``; a location within ``cutoff`` of the boundary becomes a
   boundary node;
2. an equilateral (hexagonal) lattice of :math:`P` at spacing :math:`h_0 =`
   ``max_edge[0]``, and of the *outer extension* (points within ``extension`` of
   :math:`P`) at spacings graded with the distance :math:`d` to :math:`P`, target
   :math:`h(d) = \min(h_1, h_0 + g d)` (:math:`h_1 =` ``max_edge[1]``, :math:`g =`
   ``grade``); the outer boundary (the convex hull of :math:`P` grown by a 16-gon of
   radius ``extension``) is split at spacing :math:`h_1`;
3. the Delaunay triangulation of all nodes (``scipy.spatial.Delaunay``, Qhull), then
   Delaunay refinement in the manner of Chew and Ruppert: the circumcentres of
   triangles with an angle below ``min_angle`` or an edge longer than :math:`h`
   (:math:`h_0` for a triangle with a vertex inside :math:`P`, else :math:`h(d)` at its
   centroid) are inserted, a batch per round, until none is left or ``max_rounds``.
   A circumcentre is at distance :math:`R` from every node (the circumcircle of a
   Delaunay triangle is empty), so insertions never create short edges.  A circumcentre
   in the diametral circle of a boundary segment (of :math:`P` or of the outer boundary)
   or outside the outer boundary splits that segment at its midpoint instead, so the
   boundary segments stay edges of the mesh: the mesh follows :math:`P` exactly.
   Insertions update the triangulation locally (:mod:`pymc_sparse.spde.refine`), so a
   round costs little more than its insertions: :math:`10^5` nodes take seconds.
4. For a non-convex :math:`P`, triangles whose centroid is farther than ``extension``
   from :math:`P` are dropped (the outer boundary follows the pockets of :math:`P`, as a
   staircase of mesh edges).

The outer extension pushes the SPDE's boundary effect (its Neumann condition inflates
the variance within about one range of the boundary) away from the data: make it at least
one practical range wide.  The boundary of :math:`P` is a mesh line, not a barrier: the
field is continuous across it (no barrier models).

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

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.spatial import ConvexHull, cKDTree

from pymc_sparse.spde.refine import (
    LocalDelaunay,
    hex_fill,
    inside_polygon,
    project_to_polygon,
    refine,
    resample,
    signed_areas,
    thin,
    triangle_angles,
)

__all__ = ["TriangleMesh", "mesh_from_points"]


def _as_points(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"`{name}` must be an (m, 2) array of x, y coordinates, got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or infinite coordinates.")
    return x


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
        area = signed_areas(nodes, tri)
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
        return triangle_angles(self.nodes, self.triangles)

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


def _pair(v, name):
    if np.ndim(v) == 0:
        return float(v), float(v)
    v = tuple(float(u) for u in v)
    if len(v) != 2:
        raise ValueError(f"`{name}` must be a number or a pair (inner, outer), got {v!r}.")
    return v


def _inner_polygon(loc, boundary):
    """The inner domain, counter-clockwise: ``boundary`` or the convex hull of ``loc``."""
    if boundary is None:
        return loc[ConvexHull(loc).vertices]
    inner = _as_points(boundary, "boundary")
    if inner.shape[0] > 3 and np.allclose(inner[0], inner[-1]):
        inner = inner[:-1]
    if inner.shape[0] < 3:
        raise ValueError("`boundary` needs at least 3 vertices.")
    fan = np.array([[0, i, i + 1] for i in range(1, len(inner) - 1)])
    if signed_areas(inner, fan).sum() < 0:
        inner = inner[::-1]
    if not np.all(inside_polygon(loc, inner) | (project_to_polygon(loc, inner)[0] < 1e-12)):
        raise ValueError("Some locations lie outside `boundary`; enlarge the polygon.")
    return inner


def _corner_angles(poly):
    """Interior angle (degrees) at each vertex of a counter-clockwise polygon."""
    u = np.roll(poly, 1, axis=0) - poly
    v = np.roll(poly, -1, axis=0) - poly
    a = np.degrees(np.arctan2(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0], np.sum(u * v, 1)))
    return np.mod(-a, 360.0)


def _boundary_chain(inner, nodes, h, cutoff, sharp_below):
    """Nodes along the inner boundary at spacing <= ``h``, through locations within ``cutoff``.

    Returns the chain (in order), which of ``nodes`` it took over, and the sharp-corner flags.
    """
    pts, par = resample(inner, h)
    corner = np.isclose(par, np.round(par))
    angle = _corner_angles(inner)
    sharp = corner & (
        np.minimum(angle, 360 - angle)[np.round(par).astype(int) % len(inner)] < sharp_below
    )
    dist, edge, t = project_to_polygon(nodes, inner)
    on = dist < cutoff
    if on.any():
        drop = cKDTree(nodes[on]).query(pts)[0] < cutoff
        pts = np.concatenate([pts[~drop], nodes[on]])
        par = np.concatenate([par[~drop], edge[on] + t[on]])
        sharp = np.concatenate([sharp[~drop], np.zeros(int(on.sum()), bool)])
        order = np.argsort(par, kind="stable")
        pts, sharp = pts[order], sharp[order]
    return pts, on, sharp


def _graded_fill(inner, dist, h_in, h_out, grade, ext, avoid):
    """Hexagonal lattices: spacing ``h_in`` inside, growing with the distance ``d`` outside.

    Outside the inner domain the target spacing is ``min(h_out, h_in + grade * d)``; it is
    met by lattices at spacings ``h_in * 1.5**k`` (and ``h_out``), each kept in the band of
    ``d`` where it applies, shrunk by 0.45 of its spacing on both sides.
    """
    spacings = [h_in]
    while spacings[-1] * 1.5 < h_out:
        spacings.append(spacings[-1] * 1.5)
    if h_out > h_in:
        spacings.append(h_out)
    d_max = 0.98 * ext  # the outer polygon contains {d <= ext cos(pi / 16)}
    out = []
    lo, hi = inner.min(0), inner.max(0)
    for k, s in enumerate(spacings):
        d_lo = 0.0 if k == 0 else (s - h_in) / grade
        d_hi = (spacings[k + 1] - h_in) / grade if k + 1 < len(spacings) else np.inf
        d_hi = min(d_hi, d_max - 0.6 * s)
        if k and d_lo + 0.45 * s > d_hi - 0.45 * s:
            continue
        grow = min(d_hi, d_max)
        lat = hex_fill(lo - grow, hi + grow, s)
        d = dist(lat)
        ins = inside_polygon(lat, inner)
        margin = 0.5 * s if k == 0 else 0.45 * s
        sel = ~ins & (d >= d_lo + margin) & (d <= d_hi - 0.45 * s)
        if k == 0:
            sel |= ins & (d > 0.5 * h_in)
        lat = lat[sel]
        if k == 0 and lat.size and avoid.size:
            lat = lat[cKDTree(avoid).query(lat)[0] > 0.5 * h_in]
        out.append(lat)
    return np.concatenate(out)


def mesh_from_points(
    locations,
    *,
    boundary=None,
    max_edge=None,
    extension=None,
    min_angle: float = 25.0,
    cutoff=None,
    grade: float = 0.4,
    max_rounds: int = 100,
) -> TriangleMesh:
    r"""Refined triangulation covering ``locations``, with an outer extension.

    Parameters
    ----------
    locations : array_like, shape (m, 2)
        Point locations (observation sites); a node is placed at each (after merging
        locations closer than ``cutoff``).
    boundary : array_like, shape (k, 2), optional
        Polygon of the study region (any orientation, not closed explicitly, simple).
        Default: the convex hull of ``locations``.  Its edges are edges of the mesh
        (split into pieces of at most ``max_edge[0]``; a location within ``cutoff`` of
        the boundary becomes a boundary node); the mesh is fine inside it, and the outer
        extension is the set of points within ``extension`` of it.
    max_edge : float or (float, float), optional
        Largest edge length inside the region and in the outer extension.  Default:
        the region's bounding-box diagonal / 25 inside, three times that outside.  A
        number means both.
    extension : float, optional
        Width of the outer extension; default a quarter of that diagonal.  Make
        it at least the largest practical range you expect: the SPDE's Neumann boundary
        inflates the variance within about one range of the mesh boundary.
    min_angle : float
        Smallest angle in degrees (at most 33).  Guaranteed unless the refinement hits
        ``max_rounds`` (a warning says so) and except at corners of ``boundary`` sharper
        than ``2 * min_angle``.
    cutoff : float, optional
        Locations closer than this share one node; default ``max_edge[0] / 5``.
    grade : float
        Outside the region the largest edge grows as ``max_edge[0] + grade * d`` with
        the distance ``d`` to the region, up to ``max_edge[1]``.
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
    >>> bool(mesh.angles().min() > 25)
    True
    """
    loc = _as_points(locations, "locations")
    if loc.shape[0] < 3 and boundary is None:
        raise ValueError("Give at least 3 locations, or a `boundary` polygon.")
    if not 0 < min_angle <= 33:
        raise ValueError(f"`min_angle` must be in (0, 33] degrees, got {min_angle}.")
    if not grade > 0:
        raise ValueError(f"`grade` must be positive, got {grade}.")
    inner = _inner_polygon(loc, boundary)
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
    convex = bool(np.all(_corner_angles(inner) <= 180 + 1e-9))

    # Nodes: the locations, the inner boundary chain, graded lattices, the outer chain.
    data = loc[thin(loc, cutoff)]
    chain, on, sharp_in = _boundary_chain(inner, data, h_in, cutoff, 2 * min_angle)
    data = data[~on]
    tree = cKDTree(resample(inner, h_in / 4)[0])  # distance to the region, to h_in / 8

    def dist(x):
        return tree.query(x)[0]

    fill = _graded_fill(inner, dist, h_in, h_out, grade, ext, np.concatenate([data, chain]))
    ang = np.linspace(0, 2 * np.pi, 17)[:-1]
    grown = (inner[:, None, :] + ext * np.stack([np.cos(ang), np.sin(ang)], 1)[None]).reshape(-1, 2)
    outer = grown[ConvexHull(grown).vertices]
    outer = outer[thin(outer, 0.5 * h_out)]
    ring = resample(outer, h_out)[0]
    # Far corners keep the outer boundary off Qhull's convex hull (collinear hull points
    # would be dropped); their triangles are not part of the mesh.
    lo, hi = outer.min(0), outer.max(0)
    pad = 2.0 * (hi - lo).max()
    far = np.array([[lo[0] - pad, lo[1] - pad], [hi[0] + pad, lo[1] - pad],
                    [hi[0] + pad, hi[1] + pad], [lo[0] - pad, hi[1] + pad]])  # fmt: skip
    pts = np.concatenate([far, ring, chain, data, fill])
    n_ring, n_chain = ring.shape[0], chain.shape[0]
    zone = np.full(pts.shape[0], 2, np.int8)
    zone[4 + n_ring : 4 + n_ring + n_chain] = 1
    zone[4 + n_ring + n_chain :] = np.where(
        inside_polygon(pts[4 + n_ring + n_chain :], inner), 0, 2
    )
    sharp = np.zeros(pts.shape[0], bool)
    sharp[4 + n_ring : 4 + n_ring + n_chain] = sharp_in

    def closed(start, k):
        i = np.arange(start, start + k)
        return np.column_stack([i, np.roll(i, -1)])

    seg = np.concatenate([closed(4, n_ring), closed(4 + n_ring, n_chain)])
    seg_outer = np.arange(seg.shape[0]) < n_ring

    d_cap = max(ext, (h_out - h_in) / grade) + h_out  # beyond it only "far" matters

    def sizing(centroids, inside):
        d = np.zeros(inside.shape)
        d[~inside] = tree.query(centroids[~inside], distance_upper_bound=d_cap)[0]
        h = np.where(inside, h_in, np.minimum(h_out, h_in + grade * d))
        return h, (inside | (d <= ext)) if not convex else np.ones(d.shape, bool)

    dt = LocalDelaunay(pts, cell=h_out)
    tri, _, nbad, _ = refine(
        dt, zone=zone, sharp=sharp, seg=seg, seg_outer=seg_outer, outer=outer,
        sizing=sizing, inside_inner=lambda x: inside_polygon(x, inner), nfar=4,
        min_angle=min_angle, max_rounds=max_rounds,
    )  # fmt: skip
    if nbad:
        warnings.warn(
            f"mesh_from_points: {nbad} triangle(s) still too large or below min_angle="
            f"{min_angle} after max_rounds={max_rounds}; raise max_rounds or lower min_angle.",
            stacklevel=2,
        )
    used = np.zeros(dt.pts.shape[0], bool)
    used[tri.ravel()] = True
    remap = np.cumsum(used) - 1
    return TriangleMesh(dt.pts[used], remap[tri], inner=inner)
