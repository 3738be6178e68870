"""Numerics of the sparse embedded Laplace approximation (NumPy/SciPy, no PyTensor).

``families``: observation log-likelihoods and their derivatives; ``structure``: the
static, hashable part of a model (patterns of Q, A and H, constraints); ``newton``: the
constrained Newton solver, the value and its IFT gradient; ``prior``: the cached factor
and selected inverse of Q (reused while Q is a positive multiple of the cached one);
``posterior``: the Gaussian approximation of the field as a result object;
``correction``: the second-order correction of the log marginal.  The Ops of
:mod:`pymc_sparse.ops.laplace` and the latent recovery call these.
"""

from pymc_sparse.linalg.laplace.families import FAMILIES as FAMILIES
from pymc_sparse.linalg.laplace.families import LaplaceFamily as LaplaceFamily
from pymc_sparse.linalg.laplace.newton import NotConvergedError as NotConvergedError
from pymc_sparse.linalg.laplace.newton import laplace_gradient as laplace_gradient
from pymc_sparse.linalg.laplace.newton import laplace_state as laplace_state
from pymc_sparse.linalg.laplace.newton import make_inputs as make_inputs
from pymc_sparse.linalg.laplace.posterior import LaplacePosterior as LaplacePosterior
from pymc_sparse.linalg.laplace.posterior import laplace_posterior as laplace_posterior
from pymc_sparse.linalg.laplace.posterior import (
    laplace_posterior_from_inputs as laplace_posterior_from_inputs,
)
from pymc_sparse.linalg.laplace.posterior import sample_prior as sample_prior
from pymc_sparse.linalg.laplace.structure import LaplaceStructure as LaplaceStructure
from pymc_sparse.linalg.laplace.structure import laplace_structure as laplace_structure
