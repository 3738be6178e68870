"""Loaders for the public areal data sets shipped in ``models/data/``.

Every loader reads plain CSV files next to this module (no network, no pandas), checks
what it read against the counts documented in ``models/data/SOURCE.md`` and returns a
dict of NumPy arrays plus the adjacency as a symmetric 0/1 ``scipy.sparse.csc_matrix``.
Nothing is rescaled or dropped silently: the only change to the published values is the
one the original analyses make and the docstrings state (NYC: ``E < 10`` set to 10).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["DATA_DIR", "adjacency_from_edges", "load_nyc", "load_scotland"]

#: Folder holding the CSV files and their provenance note ``SOURCE.md``.
DATA_DIR = Path(__file__).resolve().parent / "data"

_SCOTLAND_GRAPHS = {
    # name: (file, number of undirected edges stated in SOURCE.md)
    "connected": ("scotland_edges_stan_connected.csv", 132),
    "islands": ("scotland_edges_stan_islands.csv", 126),
    "geobugs": ("scotland_edges_geobugs.csv", 117),
}


def _read_csv(name: str) -> dict[str, list[str]]:
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; the example data ship with the repository in models/data/ "
            "(see models/data/SOURCE.md)."
        )
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols: dict[str, list[str]] = {k: [] for k in reader.fieldnames or ()}
        for row in reader:
            for k, v in row.items():
                cols[k].append(v)
    return cols


def _read_edges(name: str, n: int, n_edges: int) -> np.ndarray:
    cols = _read_csv(name)
    edges = np.column_stack(
        [np.asarray(cols["node1"], dtype=np.int64), np.asarray(cols["node2"], dtype=np.int64)]
    )
    if edges.shape[0] != n_edges:
        raise ValueError(f"{name}: expected {n_edges} edges (SOURCE.md), read {edges.shape[0]}.")
    return edges - 1  # files are 1-based


def adjacency_from_edges(edges, n: int) -> sp.csc_matrix:
    """Symmetric 0/1 adjacency matrix from an undirected 0-based edge list.

    Parameters
    ----------
    edges : array_like of int, shape (m, 2)
        Each undirected edge once, 0-based node indices.
    n : int
        Number of nodes.

    Returns
    -------
    scipy.sparse.csc_matrix
        ``W`` with ``W[i, j] = W[j, i] = 1`` for every edge, zero diagonal, float64,
        sorted indices.
    """
    e = np.asarray(edges, dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"`edges` must have shape (m, 2), got {e.shape}.")
    if e.size and (e.min() < 0 or e.max() >= n):
        raise ValueError(f"Edge endpoints must lie in [0, {n}).")
    if np.any(e[:, 0] == e[:, 1]):
        raise ValueError("The edge list contains self-loops.")
    rows = np.concatenate([e[:, 0], e[:, 1]])
    cols = np.concatenate([e[:, 1], e[:, 0]])
    W = sp.csc_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    if W.nnz != rows.size:  # coo -> csc sums duplicates
        raise ValueError("The edge list contains duplicate edges.")
    W.sort_indices()
    return W


def load_scotland(graph: str = "connected") -> dict:
    """Scottish lip cancer data (Clayton & Kaldor 1987): 56 districts.

    The Stan/BUGS version of the data (expected counts with one decimal), as used by the
    Stan case study and R-INLA's BYM2 analyses; see ``models/data/SOURCE.md``.

    Parameters
    ----------
    graph : {"connected", "islands", "geobugs"}
        Which adjacency to return.  ``"connected"``: Stan's graph, 132 edges, one
        component (the islands Orkney, Shetland and the Western Isles joined to the
        mainland).  ``"islands"``: the same graph without the 6 edges touching those
        three districts, 126 edges, 4 components (3 singletons).  ``"geobugs"``: the
        GeoBUGS graph, 117 edges, 4 components; it is **not** the Stan graph minus the
        islands (it differs in 19 mainland edges), so compare it only with references
        that used it.

    Returns
    -------
    dict
        ``y`` (int64, observed cases), ``E`` (float64, expected cases), ``x``
        (float64, AFF/10: the percentage of the workforce in agriculture, fishing and
        forestry divided by 10, the covariate of the Stan/INLA/PyMC analyses), ``W``
        (56 x 56 symmetric 0/1 ``csc_matrix``), ``names`` (list of district names),
        ``graph`` (the name asked for) and ``n`` (56).

    References
    ----------
    .. [1] Clayton, D. and Kaldor, J. (1987). Empirical Bayes estimates of
       age-standardized relative risks for use in disease mapping. Biometrics 43,
       671-681.
    """
    if graph not in _SCOTLAND_GRAPHS:
        raise ValueError(
            f"Unknown Scotland graph {graph!r}; choose one of {sorted(_SCOTLAND_GRAPHS)}."
        )
    cols = _read_csv("scotland_lip_cancer.csv")
    n = len(cols["id"])
    if n != 56 or [int(i) for i in cols["id"]] != list(range(1, 57)):
        raise ValueError("scotland_lip_cancer.csv must list districts 1..56 in order.")
    fname, n_edges = _SCOTLAND_GRAPHS[graph]
    W = adjacency_from_edges(_read_edges(fname, n, n_edges), n)
    x = np.asarray(cols["x_aff_over_10"], dtype=np.float64)
    return {
        "y": np.asarray(cols["observed"], dtype=np.int64),
        "E": np.asarray(cols["expected"], dtype=np.float64),
        "x": x,
        "W": W,
        "names": list(cols["name"]),
        "graph": graph,
        "n": n,
    }


def load_nyc() -> dict:
    """Pedestrian and bicyclist injuries in New York City, 2001: 1,921 census tracts.

    The subset of the Stan case study (DiMaggio et al.), tracts in ascending GEOID10
    order, with queen-contiguity adjacency (5,461 edges, one connected component); see
    ``models/data/SOURCE.md``.

    Returns
    -------
    dict
        ``y`` (int64, injuries in 2001), ``E`` (float64, the exposure used as log
        offset), ``pop`` (int64, the raw population, unchanged), ``W`` (1921 x 1921
        symmetric 0/1 ``csc_matrix``), ``geoid`` (int64 tract ids) and ``n``.

    Notes
    -----
    ``E`` is the 2001 population with values below 10 set to 10, exactly as the Stan
    case study does (``E[E < 10] = 10``): 21 tracts have a population below 10, 11 of
    them zero, and a zero exposure would make the log offset infinite.  ``pop`` keeps
    the published values.
    """
    cols = _read_csv("nyc_pedestrian_injuries_2001.csv")
    n = len(cols["id"])
    if n != 1921:
        raise ValueError(f"nyc_pedestrian_injuries_2001.csv: expected 1921 tracts, read {n}.")
    pop = np.asarray(cols["pop_2001"], dtype=np.int64)
    E = pop.astype(np.float64)
    E[E < 10] = 10.0
    W = adjacency_from_edges(_read_edges("nyc_edges.csv", n, 5461), n)
    return {
        "y": np.asarray(cols["events_2001"], dtype=np.int64),
        "E": E,
        "pop": pop,
        "W": W,
        "geoid": np.asarray(cols["geoid10"], dtype=np.int64),
        "n": n,
    }
