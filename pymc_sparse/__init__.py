"""pymc_sparse: differentiable sparse linear algebra and GMRF priors for PyMC.

The public API: :class:`SparseMatrix` (static pattern + symbolic values), the Ops'
wrappers :func:`logdet`, :func:`solve`, :func:`selected_inverse`,
:func:`marginal_variances`, the sampler :func:`sample_gmrf`, and the shared factor
cache's :func:`cache_info` / :func:`clear_cache` / :func:`cholesky`.
"""

import importlib.util

from pymc_sparse.cholmod import NotPositiveDefiniteError as NotPositiveDefiniteError
from pymc_sparse.cholmod import cache_info as cache_info
from pymc_sparse.cholmod import cholesky as cholesky
from pymc_sparse.cholmod import clear_cache as clear_cache
from pymc_sparse.ops import SparseLogDet as SparseLogDet
from pymc_sparse.ops import SparseSelectedInverse as SparseSelectedInverse
from pymc_sparse.ops import SparseSolve as SparseSolve
from pymc_sparse.ops import logdet as logdet
from pymc_sparse.ops import marginal_variances as marginal_variances
from pymc_sparse.ops import selected_inverse as selected_inverse
from pymc_sparse.ops import solve as solve
from pymc_sparse.pattern import SparsityPattern as SparsityPattern
from pymc_sparse.sampling import sample_gmrf as sample_gmrf
from pymc_sparse.sparse import SparseMatrix as SparseMatrix
from pymc_sparse.sparse import kron as kron

__version__ = "0.1.0"

if importlib.util.find_spec("jax") is not None:  # registers jax_funcify for every Op
    try:
        import pymc_sparse.dispatch.jax  # noqa: F401
    except ImportError:  # pragma: no cover - dispatch module not present yet
        pass
