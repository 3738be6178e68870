"""pymc_sparse: differentiable sparse linear algebra and GMRF priors for PyMC.

The public API (docs/api.md): :class:`SparseMatrix` and the Ops' wrappers
(:func:`logdet`, :func:`solve`, :func:`selected_inverse`, :func:`marginal_variances`) on
one shared CHOLMOD factor cache (:func:`cholesky`, :func:`cache_info`,
:func:`clear_cache`); the distributions :class:`SparseGMRF`, :class:`CAR`, :class:`ICAR`,
:func:`BYM2`, :class:`MarginalGMRFNormal`, :class:`LaplaceGMRF` and :class:`MaternSPDE`;
inference helpers (:func:`sample_imh`, :func:`sample_latent`, :func:`marginalize_laplace`,
:func:`fit_laplace_grid`, :func:`check_laplace`); certified one-parameter
log-determinants; precision builders (:mod:`pymc_sparse.precision`) and meshes
(:mod:`pymc_sparse.spde`).
"""

from importlib.util import find_spec as _find_spec

import pymc_sparse.dispatch.numba

# Distributions and precision builders (issue 4), one-parameter log-determinants (issue 9).
from pymc_sparse import precision as precision
from pymc_sparse import spde as spde
from pymc_sparse._version import __version__ as __version__
from pymc_sparse.distributions import BYM2 as BYM2
from pymc_sparse.distributions import CAR as CAR
from pymc_sparse.distributions import ICAR as ICAR
from pymc_sparse.distributions import SparseGMRF as SparseGMRF
from pymc_sparse.distributions.laplace import LaplaceGMRF as LaplaceGMRF
from pymc_sparse.distributions.marginal import MarginalGMRFNormal as MarginalGMRFNormal
from pymc_sparse.distributions.marginal import ObservationMatrix as ObservationMatrix
from pymc_sparse.distributions.matern import MaternSPDE as MaternSPDE
from pymc_sparse.distributions.matern import matern_logdet as matern_logdet
from pymc_sparse.distributions.matern import matern_precision as matern_precision
from pymc_sparse.distributions.matern import pc_matern_prior as pc_matern_prior
from pymc_sparse.inference.imh import sample_imh as sample_imh
from pymc_sparse.inference.laplace_check import check_laplace as check_laplace
from pymc_sparse.inference.laplace_grid import fit_laplace_grid as fit_laplace_grid
from pymc_sparse.inference.laplace_grid import reweight_laplace as reweight_laplace
from pymc_sparse.inference.latent import sample_latent as sample_latent
from pymc_sparse.inference.marginalize import MarginalizeError as MarginalizeError
from pymc_sparse.inference.marginalize import marginalize_laplace as marginalize_laplace
from pymc_sparse.linalg.cholmod import Factor as Factor
from pymc_sparse.linalg.cholmod import NotPositiveDefiniteError as NotPositiveDefiniteError
from pymc_sparse.linalg.cholmod import SingularPrecisionError as SingularPrecisionError
from pymc_sparse.linalg.cholmod import cache_info as cache_info
from pymc_sparse.linalg.cholmod import cholesky as cholesky
from pymc_sparse.linalg.cholmod import clear_cache as clear_cache
from pymc_sparse.linalg.laplace import LaplacePosterior as LaplacePosterior
from pymc_sparse.linalg.laplace import NotConvergedError as NotConvergedError
from pymc_sparse.linalg.laplace import laplace_posterior as laplace_posterior
from pymc_sparse.linalg.pattern import SparsityPattern as SparsityPattern
from pymc_sparse.logdet1d.families import car_logdet_family as car_logdet_family
from pymc_sparse.logdet1d.families import leroux_logdet_family as leroux_logdet_family
from pymc_sparse.logdet1d.families import sar_logdet_family as sar_logdet_family
from pymc_sparse.logdet1d.table import LogDetFamily as LogDetFamily
from pymc_sparse.logdet1d.table import logdet_family as logdet_family
from pymc_sparse.ops import SparseLogDet as SparseLogDet
from pymc_sparse.ops import SparseSelectedInverse as SparseSelectedInverse
from pymc_sparse.ops import SparseSolve as SparseSolve
from pymc_sparse.ops import logdet as logdet
from pymc_sparse.ops import marginal_variances as marginal_variances
from pymc_sparse.ops import selected_inverse as selected_inverse
from pymc_sparse.ops import solve as solve
from pymc_sparse.ops.matrix import SparseMatrix as SparseMatrix
from pymc_sparse.ops.matrix import kron as kron
from pymc_sparse.ops.sample import sample_gmrf as sample_gmrf
from pymc_sparse.ops.table import OneParameterLogDet as OneParameterLogDet
from pymc_sparse.precision import ar1_precision as ar1_precision
from pymc_sparse.precision import car_precision as car_precision
from pymc_sparse.precision import connected_components as connected_components
from pymc_sparse.precision import icar_precision as icar_precision
from pymc_sparse.precision import lattice_adjacency as lattice_adjacency
from pymc_sparse.precision import leroux_precision as leroux_precision
from pymc_sparse.precision import linear_combination as linear_combination
from pymc_sparse.precision import rw1 as rw1
from pymc_sparse.precision import rw2 as rw2
from pymc_sparse.precision import scaling_factor as scaling_factor
from pymc_sparse.precision import validate_adjacency as validate_adjacency
from pymc_sparse.precision.graph import AdjacencyChangedError as AdjacencyChangedError
from pymc_sparse.spde.mesh import mesh_from_points as mesh_from_points

if _find_spec("jax") is not None:  # registers jax_funcify for every Op
    import pymc_sparse.dispatch.jax
    import pymc_sparse.dispatch.jax_laplace
    import pymc_sparse.dispatch.jax_table  # noqa: F401
