"""Shared pieces of the Ops: input conversion and the one cache they all use."""

from __future__ import annotations

import numpy as np

from pymc_sparse.linalg.cholmod import CACHE
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops.matrix import SparseMatrix, _as_float64_vector, as_sparse_matrix
from pymc_sparse.ops.quadform import pair_product

__all__ = ["CACHE", "as_data", "check_pattern", "unpack"]


def check_pattern(pattern) -> SparsityPattern:
    if not isinstance(pattern, SparsityPattern):
        raise TypeError(f"`pattern` must be a SparsityPattern, got {type(pattern).__name__}.")
    if not pattern.has_full_diagonal:
        raise ValueError(f"{pattern!r} must store every diagonal entry (explicit zeros are fine).")
    return pattern


def as_data(pattern: SparsityPattern, data):
    data = _as_float64_vector(data)
    if data.type.shape[0] is not None and data.type.shape[0] != pattern.nnz:
        raise ValueError(
            f"{pattern!r} needs {pattern.nnz} values, `data` has {data.type.shape[0]}."
        )
    return data


def unpack(Q) -> SparseMatrix:
    """A SparseMatrix from user input (SparseMatrix, scipy sparse, dense NumPy)."""
    return as_sparse_matrix(Q)


def runtime_data(pattern: SparsityPattern, data: np.ndarray) -> np.ndarray:
    if data.shape != (pattern.nnz,):
        raise ValueError(
            f"{pattern!r} needs a values vector of length {pattern.nnz}, got shape {data.shape}."
        )
    return data


def lower_pair_product(pattern: SparsityPattern, u, v):
    r"""Cotangent of the stored values of :math:`u^\top Q v`.

    Returns, for each stored entry ``e = (i, j)``, :math:`u_i v_j + u_j v_i` off the
    diagonal and :math:`u_i v_i` on it, i.e. the derivative of :math:`u^\top Q v` with
    respect to the stored value (summed over columns if ``u, v`` are matrices); one
    fused pass (:class:`~pymc_sparse.ops.quadform.SparsePairProduct`).
    """
    return pair_product(pattern, u, v)
