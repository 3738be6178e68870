r"""Scaling factor of the intrinsic CAR model (Sørbye & Rue 2014; Riebler et al. 2016).

For a connected graph with ICAR structure matrix :math:`R = D - W`, the scaling factor is
the geometric mean of the marginal variances of the sum-to-zero constrained model,

.. math:: s = \exp\Big(\frac1n \sum_i \log \Sigma^*_{ii}\Big), \qquad
          \Sigma^* = \operatorname{Cov}(x \mid 1^\top x = 0),\ x \sim \text{ICAR}(R),

so that :math:`s R` has generalised variance 1 and a precision (or standard deviation)
parameter has the same meaning on every graph.  On a disconnected graph each connected
component is scaled on its own, and a node without neighbours gets the factor 1, as
R-INLA does (Freni-Sterrantino et al. 2018).

R-INLA's ``inla.scale.model`` (``method="inla"`` here) computes :math:`\Sigma^*` per
component from the jittered proper precision :math:`Q = R + \epsilon\, \max_i(R_{ii})\, I`,
:math:`\epsilon = \sqrt{\epsilon_{\text{mach}}}`, corrected for the constraint by
kriging:

.. math:: \Sigma^* = \Sigma - \Sigma 1 (1^\top \Sigma 1)^{-1} 1^\top \Sigma, \qquad
          \Sigma = Q^{-1},\quad
          \Sigma^*_{ii} = \Sigma_{ii} - \frac{(\Sigma 1)_i^2}{1^\top \Sigma 1},

so only :math:`\operatorname{diag}(\Sigma)` (the selected inverse of the cached sparse
factor) and one solve :math:`\Sigma 1 = Q^{-1} 1` are needed.  Because :math:`Q` is block
diagonal over components, a single factorisation, selected inverse and solve serve all
components at once.  ``method="exact"`` gives :math:`\operatorname{diag}(R^+)` without
jitter (see :mod:`pymc_sparse.precision.components`); the two differ by a relative
:math:`O(\epsilon \max_i R_{ii} / \lambda_2)` (4.9e-7 on the Scottish lip cancer graph).

References
----------
.. [1] Sørbye, S. H. and Rue, H. (2014). Scaling intrinsic Gaussian Markov random field
   priors in spatial modelling. *Spatial Statistics* 8, 39-51.
.. [2] Riebler, A., Sørbye, S. H., Simpson, D. and Rue, H. (2016). An intuitive Bayesian
   spatial model for disease mapping that accounts for scaling. *Statistical Methods in
   Medical Research* 25(4), 1145-1165.
.. [3] Freni-Sterrantino, A., Ventrucci, M. and Rue, H. (2018). A note on intrinsic
   conditional autoregressive models for disconnected graphs. *Spatial and
   Spatio-temporal Epidemiology* 26, 25-34.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.precision.components import GraphComponents
from pymc_sparse.precision.graph import degrees, validate_adjacency

__all__ = ["constrained_marginal_variances", "scaling_factor"]

_SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))


def _inla_variances(comp: GraphComponents) -> np.ndarray:
    W = comp.W
    d = degrees(W)
    k = comp.n_components
    maxdiag = np.zeros(k)
    np.maximum.at(maxdiag, comp.labels, d)
    diag = d + _SQRT_EPS * maxdiag[comp.labels]
    # Singletons: R-INLA sets the 1 x 1 block to 1 and its variance to 1.
    diag = np.where(comp.singleton, 1.0, diag)
    Q = (sp.diags(diag) - W).tocsc()
    pattern, data = SparsityPattern.from_scipy(Q)
    f = CACHE.factor(pattern, data)
    f.raise_if_failed()
    var = f.marginal_variances()
    s1 = f.solve(np.ones(comp.n))  # (Sigma 1) restricted to each block is Sigma_C 1_C
    one_sigma_one = np.bincount(comp.labels, weights=s1, minlength=k)
    var = var - s1**2 / one_sigma_one[comp.labels]
    return np.where(comp.singleton, 1.0, var)


def constrained_marginal_variances(W, *, method: str = "inla") -> np.ndarray:
    r"""Marginal variances of the unit ICAR on ``W`` under a sum-to-zero constraint per component.

    Parameters
    ----------
    W : array_like or scipy.sparse matrix
        Symmetric non-negative adjacency matrix (binary or weighted).
    method : {"inla", "exact"}
        ``"inla"``: R-INLA's jitter-and-krige recipe; ``"exact"``: :math:`\operatorname{diag}(R^+)`.

    Returns
    -------
    ndarray, shape (n,)
        1 for nodes without neighbours.
    """
    comp = GraphComponents.from_adjacency(validate_adjacency(W))
    if method == "inla":
        return _inla_variances(comp)
    if method == "exact":
        return comp.constrained_variances
    raise ValueError(f"`method` must be 'inla' or 'exact', got {method!r}.")


def scaling_factor(W, *, per_node: bool = False, method: str = "inla"):
    r"""Geometric mean of the constrained ICAR marginal variances (BYM2 scaling factor).

    Parameters
    ----------
    W : array_like or scipy.sparse matrix
        Symmetric non-negative adjacency matrix (binary or weighted).
    per_node : bool
        If False (default) return one number, which requires a connected graph.  If True
        return the factor of each node's component (1 for nodes without neighbours), the
        form BYM2 needs on disconnected graphs.
    method : {"inla", "exact"}
        ``"inla"`` (default) reproduces R-INLA's ``inla.scale.model``: jitter
        :math:`\sqrt{\epsilon_{\text{mach}}} \max_i R_{ii}` on the diagonal, then kriging
        on the constraint.  ``"exact"`` uses the Moore-Penrose inverse, no jitter.

    Returns
    -------
    float or ndarray of shape (n,)

    Raises
    ------
    ValueError
        If ``per_node=False`` and the graph has several connected components.

    Notes
    -----
    Cost: one sparse Cholesky factorisation, its selected inverse (Takahashi recursions on
    the pattern of the factor) and one solve; never a dense inverse.

    Examples
    --------
    >>> import pymc_sparse as pms
    >>> W = pms.precision.lattice_adjacency(10, 10)
    >>> round(pms.precision.scaling_factor(W), 4)
    0.6449
    """
    comp = GraphComponents.from_adjacency(validate_adjacency(W))
    if not per_node and comp.n_components > 1:
        raise ValueError(
            f"W has {comp.n_components} connected components "
            f"({int(comp.singleton.sum())} of them single nodes without neighbours); each is "
            "scaled separately. Pass per_node=True to get each node's factor."
        )
    if method == "inla":
        var = _inla_variances(comp)
    elif method == "exact":
        var = comp.constrained_variances
    else:
        raise ValueError(f"`method` must be 'inla' or 'exact', got {method!r}.")
    logmean = np.bincount(comp.labels, weights=np.log(var)) / comp.sizes
    s = np.exp(logmean)
    if not per_node:
        return float(s[0])
    return s[comp.labels]
