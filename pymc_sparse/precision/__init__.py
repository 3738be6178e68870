"""Graph checks and precision-matrix builders for GMRF priors."""

from pymc_sparse.precision.builders import ar1_precision as ar1_precision
from pymc_sparse.precision.builders import car_precision as car_precision
from pymc_sparse.precision.builders import icar_precision as icar_precision
from pymc_sparse.precision.builders import lattice_adjacency as lattice_adjacency
from pymc_sparse.precision.builders import leroux_precision as leroux_precision
from pymc_sparse.precision.builders import linear_combination as linear_combination
from pymc_sparse.precision.builders import proper_besag_precision as proper_besag_precision
from pymc_sparse.precision.builders import rw1 as rw1
from pymc_sparse.precision.builders import rw2 as rw2
from pymc_sparse.precision.components import GraphComponents as GraphComponents
from pymc_sparse.precision.graph import AdjacencyChangedError as AdjacencyChangedError
from pymc_sparse.precision.graph import connected_components as connected_components
from pymc_sparse.precision.graph import degrees as degrees
from pymc_sparse.precision.graph import isolated_nodes as isolated_nodes
from pymc_sparse.precision.graph import validate_adjacency as validate_adjacency
from pymc_sparse.precision.scaling import (
    constrained_marginal_variances as constrained_marginal_variances,
)
from pymc_sparse.precision.scaling import scaling_factor as scaling_factor
