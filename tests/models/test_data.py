"""The shipped example data: loaders return what models/data/SOURCE.md states."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from models._data import DATA_DIR, adjacency_from_edges, load_nyc, load_scotland

ROOT = Path(__file__).resolve().parents[2]


def _edge_set(W):
    T = sp.triu(W, k=1).tocoo()
    return {(int(i) + 1, int(j) + 1) for i, j in zip(T.row, T.col, strict=True)}  # 1-based


def _check_adjacency(W, n):
    assert W.format == "csc"
    assert W.shape == (n, n)
    assert W.dtype == np.float64
    assert W.has_sorted_indices
    assert (W != W.T).nnz == 0
    assert np.all(W.diagonal() == 0)
    assert set(np.unique(W.data).tolist()) == {1.0}


# graph, edges, components, sorted component sizes, isolated districts (1-based)
SCOTLAND = [
    ("connected", 132, 1, [56], []),
    ("islands", 126, 4, [1, 1, 1, 53], [6, 8, 11]),
    ("geobugs", 117, 4, [1, 1, 1, 53], [6, 8, 11]),
]


@pytest.mark.parametrize(
    "graph, n_edges, n_comp, sizes, isolated", SCOTLAND, ids=[g[0] for g in SCOTLAND]
)
def test_scotland_graphs(graph, n_edges, n_comp, sizes, isolated):
    d = load_scotland(graph)
    assert d["graph"] == graph and d["n"] == 56
    W = d["W"]
    _check_adjacency(W, 56)
    assert W.nnz == 2 * n_edges
    k, labels = connected_components(W, directed=False)
    assert k == n_comp
    assert sorted(np.bincount(labels).tolist()) == sizes
    deg = np.asarray(W.sum(axis=1)).ravel()
    assert (np.flatnonzero(deg == 0) + 1).tolist() == isolated


def test_scotland_values():
    d = load_scotland()
    assert d["y"].shape == d["E"].shape == d["x"].shape == (56,)
    assert d["y"].dtype == np.int64 and d["E"].dtype == np.float64
    assert len(d["names"]) == 56
    assert d["names"][0] == "skye-lochalsh" and d["names"][55] == "annandale"
    assert [d["names"][i - 1] for i in (6, 8, 11)] == ["orkney", "shetland", "western.isles"]
    # Published totals and the first rows of the Stan data (1-decimal E).
    assert d["y"].sum() == 536
    assert d["E"].sum() == pytest.approx(536.2)
    np.testing.assert_array_equal(d["y"][:3], [9, 39, 11])
    np.testing.assert_allclose(d["E"][:3], [1.4, 8.7, 3.0])
    np.testing.assert_allclose(d["x"][:3], [1.6, 1.6, 1.0])
    # x is AFF / 10, not the raw percentage.
    import csv

    with (DATA_DIR / "scotland_lip_cancer.csv").open() as fh:
        aff = np.array([float(r["aff_percent"]) for r in csv.DictReader(fh)])
    np.testing.assert_allclose(d["x"], aff / 10)
    # The other graphs carry the same data.
    for g in ("islands", "geobugs"):
        o = load_scotland(g)
        np.testing.assert_array_equal(o["y"], d["y"])
        np.testing.assert_array_equal(o["E"], d["E"])


def test_scotland_islands_is_connected_minus_island_edges():
    conn = _edge_set(load_scotland("connected")["W"])
    isl = _edge_set(load_scotland("islands")["W"])
    assert isl <= conn
    assert conn - isl == {(1, 11), (3, 6), (5, 11), (6, 8), (9, 11), (11, 12)}


def test_scotland_geobugs_differs_from_stan_as_documented():
    stan = _edge_set(load_scotland("islands")["W"])
    geo = _edge_set(load_scotland("geobugs")["W"])
    only_stan = {
        (5, 13), (15, 50), (20, 55), (23, 36), (23, 37), (26, 42), (27, 55),
        (30, 56), (32, 35), (33, 56), (36, 39), (39, 41), (40, 41), (45, 56),
    }  # fmt: skip
    only_geo = {(20, 56), (27, 56), (30, 55), (33, 55), (45, 55)}
    assert stan - geo == only_stan
    assert geo - stan == only_geo


def test_scotland_unknown_graph():
    with pytest.raises(ValueError, match=r"Unknown Scotland graph 'stan'.*connected"):
        load_scotland("stan")


def test_nyc():
    d = load_nyc()
    n = d["n"]
    assert n == 1921
    assert d["y"].shape == d["E"].shape == d["pop"].shape == d["geoid"].shape == (n,)
    W = d["W"]
    _check_adjacency(W, n)
    assert W.nnz == 2 * 5461
    k, _ = connected_components(W, directed=False)
    assert k == 1
    assert np.all(np.asarray(W.sum(axis=1)).ravel() > 0)
    assert d["y"].sum() == 15490
    assert d["pop"].sum() == 7066931
    assert np.all(np.diff(d["geoid"]) > 0)
    # E = pop with E < 10 set to 10 (the case study's rule); 21 tracts, 11 of them empty.
    small = d["pop"] < 10
    assert small.sum() == 21 and (d["pop"] == 0).sum() == 11
    np.testing.assert_array_equal(d["E"][small], 10.0)
    np.testing.assert_array_equal(d["E"][~small], d["pop"][~small])


def test_loaders_do_not_depend_on_cwd(tmp_path):
    code = (
        "from models._data import load_scotland, load_nyc;"
        "print(load_scotland('islands')['W'].nnz, load_nyc()['W'].nnz)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["252", "10922"]


@pytest.mark.parametrize(
    "edges, match",
    [
        ([[0, 0]], "self-loops"),
        ([[0, 1], [1, 0]], "duplicate"),
        ([[0, 3]], r"\[0, 3\)"),
        ([0, 1], r"shape \(m, 2\)"),
    ],
    ids=["self-loop", "duplicate", "out-of-range", "bad-shape"],
)
def test_adjacency_from_edges_rejects_bad_input(edges, match):
    with pytest.raises(ValueError, match=match):
        adjacency_from_edges(edges, 3)
