"""GMRF distributions for PyMC: SparseGMRF, CAR, ICAR and the BYM2 constructor."""

from pymc_sparse.distributions.bym2 import BYM2 as BYM2
from pymc_sparse.distributions.car import CAR as CAR
from pymc_sparse.distributions.gmrf import SparseGMRF as SparseGMRF
from pymc_sparse.distributions.icar import ICAR as ICAR
from pymc_sparse.distributions.icar import ComponentZeroSumTransform as ComponentZeroSumTransform
