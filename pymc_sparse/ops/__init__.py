"""PyTensor Ops backed by the shared CHOLMOD factor cache."""

from pymc_sparse.ops.logdet import SparseLogDet as SparseLogDet
from pymc_sparse.ops.logdet import logdet as logdet
from pymc_sparse.ops.selinv import SparseSelectedInverse as SparseSelectedInverse
from pymc_sparse.ops.selinv import marginal_variances as marginal_variances
from pymc_sparse.ops.selinv import selected_inverse as selected_inverse
from pymc_sparse.ops.solve import SparseSolve as SparseSolve
from pymc_sparse.ops.solve import solve as solve
