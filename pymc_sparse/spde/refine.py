r"""Delaunay refinement with local re-triangulation (the engine of ``mesh_from_points``).

A Delaunay triangulation is kept as arrays (triangles, circumcentres, circumradii) and
points are inserted in batches.  Inserting a batch :math:`X` into the Delaunay
triangulation :math:`T` changes only the *cavity*: the triangles whose circumcircle
contains a point of :math:`X` (Bowyer-Watson).  Every triangle of the new triangulation
inside the cavity has a vertex in :math:`X` (one with three old vertices and an empty
circumcircle would have been a triangle of :math:`T` outside the cavity), and the cavity's
boundary edges stay Delaunay, so the new triangles are exactly those triangles of the
Delaunay triangulation of (cavity vertices :math:`\cup X`) that touch :math:`X`.  That
small triangulation is computed with Qhull; a round then costs :math:`O(|X| \log |X|)`
plus one nearest-neighbour query per triangle, instead of a full :math:`O(N \log N)`
re-triangulation.  Each update is checked (triangle count :math:`|C| + 2|X|` and area);
a failed check (degenerate co-circular points) falls back to a full Qhull triangulation.

References
----------
.. [1] Bowyer, A. (1981). Computing Dirichlet tessellations. *Comput. J.* 24(2), 162-166.
.. [2] Ruppert, J. (1995). A Delaunay refinement algorithm for quality 2-dimensional mesh
   generation. *J. Algorithms* 18(3), 548-585.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.spatial import Delaunay, cKDTree

__all__ = [
    "LocalDelaunay",
    "circumcentres",
    "hex_fill",
    "inside_polygon",
    "project_to_polygon",
    "refine",
    "resample",
    "signed_areas",
    "thin",
    "triangle_angles",
]


def circumcentres(p: np.ndarray, t: np.ndarray):
    """Circumcentres ``(k, 2)`` and circumradii ``(k,)`` of triangles ``t`` of points ``p``."""
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    ba, ca = b - a, c - a
    d = 2 * (ba[:, 0] * ca[:, 1] - ba[:, 1] * ca[:, 0])
    nb, nc = np.sum(ba * ba, 1), np.sum(ca * ca, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ux = (ca[:, 1] * nb - ba[:, 1] * nc) / d
        uy = (ba[:, 0] * nc - ca[:, 0] * nb) / d
    return a + np.column_stack([ux, uy]), np.hypot(ux, uy)


def triangle_angles(nodes: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Interior angles in degrees ``(t, 3)``, the angle at each vertex."""
    p = nodes[tri]
    out = np.empty(tri.shape)
    for i in range(3):
        u = p[:, (i + 1) % 3] - p[:, i]
        v = p[:, (i + 2) % 3] - p[:, i]
        cosang = np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
        out[:, i] = np.degrees(np.arccos(np.clip(cosang, -1, 1)))
    return out


def signed_areas(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Signed areas of triangles ``t`` (positive when counter-clockwise)."""
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    return 0.5 * (
        (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    )


def _areas(p, t):
    return np.abs(signed_areas(p, t))


# -- polygon helpers -----------------------------------------------------------------------
def inside_polygon(x: np.ndarray, poly: np.ndarray) -> np.ndarray:
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


def project_to_polygon(x: np.ndarray, poly: np.ndarray):
    """Distance to the polygon's boundary, nearest edge and edge parameter, chunked."""
    a = poly
    ab = np.roll(poly, -1, axis=0) - a
    L2 = np.maximum(np.sum(ab * ab, 1), 1e-300)
    dist, edge, par = np.empty(x.shape[0]), np.empty(x.shape[0], np.int64), np.empty(x.shape[0])
    step = max(1, 4_000_000 // max(1, a.shape[0]))
    for s in range(0, x.shape[0], step):
        d = x[s : s + step, None, :] - a[None]
        t = np.clip(np.sum(d * ab[None], 2) / L2, 0.0, 1.0)
        r = d - t[..., None] * ab[None]
        d2 = np.sum(r * r, 2)
        j = np.argmin(d2, axis=1)
        rows = np.arange(j.size)
        dist[s : s + step] = np.sqrt(d2[rows, j])
        edge[s : s + step], par[s : s + step] = j, t[rows, j]
    return dist, edge, par


def resample(poly: np.ndarray, h: float):
    """Points along the closed polygon at spacing <= ``h`` (vertices kept) and their parameters.

    The parameter of a point on edge ``j`` at fraction ``t`` is ``j + t``.
    """
    out, par = [], []
    b = np.roll(poly, -1, axis=0)
    for j, (p, q) in enumerate(zip(poly, b)):
        k = max(1, math.ceil(float(np.hypot(*(q - p))) / h))
        t = np.arange(k) / k
        out.append(p + t[:, None] * (q - p))
        par.append(j + t)
    return np.concatenate(out), np.concatenate(par)


def hex_fill(lo, hi, h: float) -> np.ndarray:
    """Equilateral lattice of spacing ``h`` covering the box ``[lo, hi]``."""
    dy = h * math.sqrt(3) / 2
    ny = math.ceil((hi[1] - lo[1]) / dy) + 1
    nx = math.ceil((hi[0] - lo[0]) / h) + 2
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    x = lo[0] + h * (i + 0.5 * (j % 2)) - h / 2
    y = lo[1] + dy * j
    return np.column_stack([x.ravel(), y.ravel()])


def thin(points: np.ndarray, cutoff: float) -> np.ndarray:
    """Indices kept by greedy de-duplication (no point within ``cutoff`` of an earlier kept one)."""
    keep = np.ones(len(points), bool)
    if cutoff <= 0 or points.shape[0] < 2:
        return np.flatnonzero(keep)
    pairs = cKDTree(points).query_pairs(cutoff, output_type="ndarray")
    if pairs.size:
        nbrs = sp.coo_matrix(
            (np.ones(pairs.shape[0]), (pairs.min(1), pairs.max(1))), shape=(len(points),) * 2
        ).tocsr()
        for i in np.unique(pairs.min(1)):  # a kept i removes its later neighbours
            if keep[i]:
                keep[nbrs.indices[nbrs.indptr[i] : nbrs.indptr[i + 1]]] = False
    return np.flatnonzero(keep)


# -- the triangulation ---------------------------------------------------------------------
class LocalDelaunay:
    """Delaunay triangulation of a growing point set, updated cavity by cavity.

    Attributes ``pts`` ``(n, 2)``, ``tri`` ``(t, 3)``, ``cc`` ``(t, 2)`` and ``R`` ``(t,)``.
    The caller keeps every inserted point strictly inside the convex hull of the first
    points (the hull never changes).  ``cell`` (a typical circumradius, e.g. the largest
    edge wanted) sizes the grid that pre-selects the triangles near a small batch.
    """

    def __init__(self, pts: np.ndarray, cell: float):
        self.pts = np.ascontiguousarray(pts, dtype=np.float64)
        self.cell = float(cell)
        self._full()
        self.fallbacks = 0

    def _near(self, x):
        """Triangles that may conflict with ``x``: circumcentre within ``2 cell`` or R large."""
        if x.shape[0] * 49 > self.tri.shape[0] // 20:
            return np.arange(self.tri.shape[0])
        lo = x.min(0) - 3 * self.cell
        shape = np.ceil((x.max(0) + 3 * self.cell - lo) / self.cell).astype(int) + 1
        grid = np.zeros(tuple(shape), bool)
        ij = ((x - lo) // self.cell).astype(int)
        for di in range(-3, 4):
            for dj in range(-3, 4):
                grid[ij[:, 0] + di, ij[:, 1] + dj] = True
        cij = np.floor((self.cc - lo) / self.cell)
        inbox = np.all((cij >= 0) & (cij < shape), axis=1)
        near = self.R > 2 * self.cell
        c = cij[inbox].astype(int)
        near[inbox] |= grid[c[:, 0], c[:, 1]]
        return np.flatnonzero(near)

    def _full(self):
        self.tri = Delaunay(self.pts).simplices.astype(np.int64)
        self.cc, self.R = circumcentres(self.pts, self.tri)

    def insert(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Insert points ``x``; return ``(kept, new)``: mask of old triangles kept, new rows.

        After the call ``tri`` is ``concat(old_tri[kept], tri[new])`` (new rows at the end);
        ``kept`` is None after a full re-triangulation (every row is new).
        """
        n, k = self.pts.shape[0], x.shape[0]
        self.pts = np.concatenate([self.pts, x])
        tree = cKDTree(x)
        near = self._near(x)
        conflict = np.zeros(self.tri.shape[0], bool)
        conflict[near] = tree.query(self.cc[near])[0] < self.R[near] * (1 + 1e-9)
        old = self.tri[conflict]
        verts = np.unique(np.concatenate([old.ravel(), np.arange(n, n + k)]))
        sub = verts[Delaunay(self.pts[verts]).simplices]
        touch = (sub >= n).any(1)
        if not touch.all():
            # A triangle of old vertices can lie in the cavity when a new point is on the
            # circumcircle (co-circular points: common with lattices and circumcentres).
            # Qhull's triangulated output also has flat triangles along collinear points
            # of the hull of this small point set: never part of the cavity.
            flat = sub[~touch]
            e = self.pts[flat[:, [1, 2, 0]]] - self.pts[flat]
            keep = _areas(self.pts, flat) > 1e-10 * np.max(np.sum(e * e, 2), axis=1)
            c, r = circumcentres(self.pts, flat[keep])
            keep[keep] = tree.query(c)[0] < r * (1 + 1e-7)
            keep[keep] = _in_union(self.pts, flat[keep], old)
            touch[~touch] = keep
        sub = sub[touch]
        ok = sub.shape[0] == old.shape[0] + 2 * k
        if ok:
            a_old, a_new = _areas(self.pts, old).sum(), _areas(self.pts, sub).sum()
            ok = abs(a_new - a_old) <= 1e-9 * a_old
        if not ok:  # degenerate (co-circular) configuration: re-triangulate everything
            self.fallbacks += 1
            self._full()
            return None, np.arange(self.tri.shape[0])
        keep = ~conflict
        cc, R = circumcentres(self.pts, sub)
        t0 = int(keep.sum())
        self.tri = np.concatenate([self.tri[keep], sub])
        self.cc = np.concatenate([self.cc[keep], cc])
        self.R = np.concatenate([self.R[keep], R])
        return keep, np.arange(t0, self.tri.shape[0])


def _inside_convex(x: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Whether points lie strictly inside the counter-clockwise convex polygon ``poly``."""
    a, b = poly, np.roll(poly, -1, axis=0)
    cross = (b[None, :, 0] - a[None, :, 0]) * (x[:, None, 1] - a[None, :, 1]) - (
        b[None, :, 1] - a[None, :, 1]
    ) * (x[:, None, 0] - a[None, :, 0])
    return np.all(cross > 0, axis=1)


def refine(
    dt, *, zone, sharp, seg, seg_outer, outer, sizing, inside_inner, nfar, min_angle, max_rounds
):
    r"""Refine ``dt`` in batches (Ruppert, Chew); return mesh triangles, segments, #bad, rounds.

    Parameters
    ----------
    dt : LocalDelaunay
        Triangulation of all points; the first ``nfar`` are far corners (their triangles
        are exterior).
    zone : ndarray of int8
        Per node: 0 inside the inner domain, 1 on its boundary, 2 outside.
    sharp : ndarray of bool
        Per node: input corners too sharp for ``min_angle`` (exempt from the angle test).
    seg, seg_outer : ndarray
        Boundary segments ``(s, 2)`` (node indices) and whether each is on the outer boundary.
    outer : ndarray
        The outer boundary polygon (convex, counter-clockwise): insertions stay inside it.
    sizing : callable
        ``sizing(centroids, inside) -> (h, active)``: the largest edge allowed for a
        triangle and whether it belongs to the mesh.
    inside_inner : callable
        ``inside_inner(points)``: whether points lie inside the inner domain.

    Notes
    -----
    A triangle is *bad* if its smallest angle is below ``min_angle`` or its longest edge
    exceeds ``1.01 h``.  Its circumcentre is inserted unless it lies outside ``outer`` or
    in the diametral circle of a boundary segment; then the segment is split at its
    midpoint instead (Ruppert).  A batch holds the circumcentres of all bad triangles,
    largest circumradius first, none within half the circumradius of a larger one.
    """
    seg = seg.copy()
    zone, sharp = zone.copy(), sharp.copy()

    def assess(rows):
        p, t = dt.pts, dt.tri[rows]
        inside = (zone[t] == 0).any(1)
        h, active = sizing(p[t].mean(1), inside)
        active &= (t >= nfar).all(1)
        ang = triangle_angles(p, t)
        tight = ang.min(1) < min_angle
        tight &= ~sharp[t[np.arange(t.shape[0]), ang.argmin(1)]]  # input corners stay
        edge = np.linalg.norm(p[t[:, [1, 2, 0]]] - p[t], axis=2).max(1)
        return active, active & (tight | (edge > 1.01 * h))

    active, bad = assess(slice(None))
    rounds = 0
    while rounds < max_rounds:
        p = dt.pts
        mid = 0.5 * (p[seg[:, 0]] + p[seg[:, 1]])
        half = 0.5 * np.linalg.norm(p[seg[:, 1]] - p[seg[:, 0]], axis=1)
        if rounds == 0:  # segments encroached by the initial nodes (locations near a boundary)
            hits = cKDTree(p).query_ball_point(mid, half * (1 - 1e-9), return_length=True)
            split = np.flatnonzero(hits > 0)
        else:
            split = np.empty(0, np.int64)
        cc = np.empty((0, 2))
        b = np.flatnonzero(bad)
        if b.size:
            order = np.argsort(-dt.R[b])
            cc, R = dt.cc[b[order]], dt.R[b[order]]
            out = ~_inside_convex(cc, outer)
            dist, j = cKDTree(mid).query(cc, k=min(8, seg.shape[0]))
            enc = dist < half[j]
            io = np.flatnonzero(seg_outer)
            j_out = io[cKDTree(mid[io]).query(cc[out])[1]]
            split = np.unique(np.concatenate([split, j[enc & ~out[:, None]], j_out]))
            ok = ~out & ~enc.any(1)
            cc, R = cc[ok], R[ok]
            keep = np.ones(cc.shape[0], bool)
            if cc.shape[0] > 1:
                # No insertion within half the circumradius of a larger one (sorted by R);
                # triangles left bad are treated in the next round.
                pairs = cKDTree(cc).query_pairs(0.5 * float(R.max()), output_type="ndarray")
                if pairs.size:
                    i, k = pairs.min(1), pairs.max(1)
                    keep[k[np.linalg.norm(cc[i] - cc[k], axis=1) < 0.5 * R[i]]] = False
            cc = cc[keep]
        if not cc.size and not split.size:
            break
        rounds += 1
        n0 = p.shape[0]
        m = mid[split]
        new_nodes = np.arange(n0 + cc.shape[0], n0 + cc.shape[0] + m.shape[0])
        zone = np.concatenate(
            [
                zone,
                np.where(inside_inner(cc), 0, 2).astype(np.int8),
                np.where(seg_outer[split], 2, 1).astype(np.int8),
            ]
        )
        sharp = np.concatenate([sharp, np.zeros(cc.shape[0] + m.shape[0], bool)])
        seg = np.concatenate([seg, np.column_stack([new_nodes, seg[split, 1]])])
        seg[split, 1] = new_nodes
        seg_outer = np.concatenate([seg_outer, seg_outer[split]])
        kept, new = dt.insert(np.concatenate([cc, m]))
        a_new, b_new = assess(new)
        if kept is None:
            active, bad = a_new, b_new
        else:
            active = np.concatenate([active[kept], a_new])
            bad = np.concatenate([bad[kept], b_new])
    return dt.tri[active], seg, int(bad.sum()), rounds


def _in_union(p, tri, union):
    """Whether the centroid of each of ``tri`` lies in one of the triangles ``union``."""
    c = p[tri].mean(1)
    k = min(16, union.shape[0])
    cand = cKDTree(p[union].mean(1)).query(c, k=k)[1].reshape(c.shape[0], k)
    a, b, d = (p[union[cand, i]] for i in range(3))
    e1, e2, r = b - a, d - a, c[:, None, :] - a
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    l1 = (r[..., 0] * e2[..., 1] - r[..., 1] * e2[..., 0]) / det
    l2 = (e1[..., 0] * r[..., 1] - e1[..., 1] * r[..., 0]) / det
    return np.any((l1 > -1e-12) & (l2 > -1e-12) & (l1 + l2 < 1 + 1e-12), axis=1)
