"""Matérn fields on triangle meshes (the SPDE approach): meshes, FE matrices, precisions.

Numeric only (no PyTensor): the distribution is
:class:`pymc_sparse.distributions.matern.MaternSPDE`.
"""

from pymc_sparse.spde.fem import FEMatrices as FEMatrices
from pymc_sparse.spde.fem import fem_matrices as fem_matrices
from pymc_sparse.spde.mesh import TriangleMesh as TriangleMesh
from pymc_sparse.spde.mesh import mesh_from_points as mesh_from_points
from pymc_sparse.spde.precision import SPDEPrecision as SPDEPrecision
from pymc_sparse.spde.precision import kappa_tau as kappa_tau
from pymc_sparse.spde.precision import matern_correlation as matern_correlation
from pymc_sparse.spde.precision import pc_prior_rates as pc_prior_rates
from pymc_sparse.spde.precision import range_sigma as range_sigma
