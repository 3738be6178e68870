r"""Read a latent Gaussian model out of a PyMC graph (used by :mod:`.marginalize`).

Three questions are answered here, each with an error naming the variable and the reason
when the answer is "no":

* **Is the variable a GMRF we can integrate out?**  :func:`field_from_rv` turns a
  :class:`~pymc_sparse.distributions.gmrf.SparseGMRF`, :class:`~pymc_sparse.distributions.car.CAR`,
  :class:`~pymc_sparse.distributions.icar.ICAR`,
  :class:`~pymc_sparse.distributions.matern.MaternSPDE` or an iid ``pm.Normal`` vector
  (BYM2's ``_v``) into a precision on a static pattern, a mean and, for the ICAR, its
  per-component sum-to-zero rows and the generalised log-determinant on the constrained
  subspace.
* **Which family links the observations to a predictor?**  :func:`family_from_rv`
  (:mod:`._laplace_links`, re-exported here).
* **Is the predictor linear in the fields?**  :class:`LinearPredictor` writes
  :math:`\eta = o + \sum_t \operatorname{diag}(l_t)\, A_t \operatorname{diag}(r_t)\, x_{k(t)}`
  with constant sparse :math:`A_t` (selections, constant matrices) and symbolic
  coefficient vectors :math:`l_t` (per observation) and :math:`r_t` (per node), by walking
  the graph through ``+``, ``-``, ``*``, ``/`` by field-free terms, constant indexing and
  products with constant matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytensor.tensor as pt
import scipy.sparse as sp
from pymc.model.fgraph import ModelVar
from pytensor import scalar as ps
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant
from pytensor.graph.traversal import ancestors
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.math import Dot
from pytensor.tensor.random.basic import NormalRV
from pytensor.tensor.shape import SpecifyShape
from pytensor.tensor.subtensor import AdvancedSubtensor, AdvancedSubtensor1, Subtensor

from pymc_sparse.distributions._utils import core_param
from pymc_sparse.distributions.car import CARRV
from pymc_sparse.distributions.gmrf import SparseGMRFRV
from pymc_sparse.distributions.icar import ICARRV, _layout
from pymc_sparse.distributions.matern import MaternSPDERV, matern_precision
from pymc_sparse.inference._laplace_links import (
    MarginalizeError,
    _strip,
    family_from_rv,
)
from pymc_sparse.linalg.pattern import SparsityPattern

__all__ = ["Field", "MarginalizeError", "Term", "family_from_rv", "field_from_rv"]


# -- fields ------------------------------------------------------------------------------
@dataclass
class Field:
    r"""One latent vector to be integrated out: :math:`x \sim N(\mu, Q^{-1})` on a subspace.

    Attributes
    ----------
    name : str
    pattern : SparsityPattern
        Static pattern of :math:`Q` (lower triangle, full diagonal).
    q_data : TensorVariable
        Symbolic stored values of :math:`Q`.
    mu : TensorVariable
        Symbolic mean, shape ``(n,)``.
    constraint : ndarray or None
        ``(k, n)`` rows of the hard constraint :math:`C x = 0` (ICAR components).
    logdet_q : TensorVariable or None
        :math:`\log\det Q` restricted to :math:`\{C x = 0\}` where :math:`Q` is singular
        (ICAR); ``None`` means "factorise :math:`Q`".
    """

    name: str
    pattern: SparsityPattern
    q_data: object
    mu: object
    constraint: np.ndarray | None = None
    logdet_q: object = None
    index: int = 0

    @property
    def n(self) -> int:
        return self.pattern.n


def _diagonal_pattern(n: int) -> SparsityPattern:
    idx = np.arange(n)
    return SparsityPattern.from_coo(n, idx, idx)


def _vector(v, n: int):
    v = pt.cast(pt.as_tensor_variable(v), "float64")
    if v.type.ndim > 1:
        v = core_param(v, 1, "parameters")
    return pt.broadcast_to(v, (n,)) if v.type.ndim == 0 or v.type.shape[-1] == 1 else v


def field_from_rv(name: str, rv) -> Field:
    """Precision, mean and constraint of a latent variable (see the module docstring)."""
    node = rv.owner
    op = node.op
    if rv.type.ndim == 0 and isinstance(op, NormalRV):  # a scalar effect (an intercept)
        _, _, mu, sigma = node.inputs
        q = (1.0 / pt.square(sigma)).reshape((1,))
        return Field(name, _diagonal_pattern(1), q, pt.cast(mu, "float64").reshape((1,)))
    if rv.type.ndim != 1:
        raise MarginalizeError(
            f"{name!r} has {rv.type.ndim} dimensions; only one vector field per variable can be "
            "integrated out (write a batch of fields as one GMRF with a Kronecker precision)."
        )
    if isinstance(op, SparseGMRFRV):
        _, _, mu, data = node.inputs
        return Field(name, op.pattern, core_param(data, 1, "Q"), _vector(mu, op.pattern.n))
    if isinstance(op, CARRV):
        _, _, mu, d, w, alpha, tau = node.inputs
        alpha, tau = core_param(alpha, 0, "alpha"), core_param(tau, 0, "tau")
        q = tau * (core_param(d, 1, "W") - alpha * core_param(w, 1, "W"))
        return Field(name, op.pattern, q, _vector(mu, op.pattern.n))
    if isinstance(op, ICARRV):
        return _icar_field(name, op, node)
    if isinstance(op, MaternSPDERV):  # Q(kappa, tau) on the mesh's fixed pattern
        _, _, mu, kappa, tau = node.inputs
        kappa, tau = core_param(kappa, 0, "kappa"), core_param(tau, 0, "tau")
        Q = matern_precision(op.spde, kappa, tau)
        return Field(name, Q.pattern, Q.data, _vector(mu, op.spde.n))
    if isinstance(op, NormalRV):
        _, _, mu, sigma = node.inputs
        n = rv.type.shape[0]
        if n is None:  # a length given by dims: shared dim lengths evaluate
            n = int(rv.shape[0].eval())
        q = 1.0 / pt.square(_vector(sigma, n))
        return Field(name, _diagonal_pattern(n), q, _vector(mu, n))
    raise MarginalizeError(
        f"{name!r} is a {type(op).__name__}: only SparseGMRF, CAR, ICAR (and BYM2's "
        "components), MaternSPDE or an iid pm.Normal vector can be integrated out by a "
        "Laplace approximation."
    )


def _icar_field(name: str, op: ICARRV, node) -> Field:
    r"""ICAR as :math:`Q = R'/\sigma^2` with :math:`R' = R + \operatorname{diag}(1_S)`.

    Singletons :math:`S` are iid :math:`N(0, \sigma^2)` under the ``"iid"`` policy, which the
    unit diagonal encodes; each proper component carries a sum-to-zero row.  On the
    constrained subspace (dimension :math:`d`) :math:`\log\det Q = \log|R|_* - 2d\log\sigma`.
    """
    _, _, r_data, sigma = node.inputs
    pattern = op.pattern
    lay = _layout(pattern, op.singletons)
    if op.zero_sum_stdev is not None:
        raise MarginalizeError(
            f"{name!r}: an ICAR with a soft constraint (zero_sum_stdev) has a dense rank-one "
            "term per component in its precision; leave zero_sum_stdev=None (the exact "
            "constraint, which the Laplace marginal imposes sparsely)."
        )
    if op.singletons == "zero" and lay["n_singletons"]:
        raise MarginalizeError(
            f"{name!r}: an ICAR with singletons='zero' fixes nodes at 0, which the Laplace "
            "marginal does not support; use singletons='iid'."
        )
    sigma = core_param(sigma, 0, "sigma")
    r = core_param(r_data, 1, "W")
    n = pattern.n
    single = np.setdiff1d(lay["free"], lay["free"][lay["proper_pos"]])
    if single.size:
        add = np.zeros(pattern.nnz)
        add[pattern.diag_index[single]] = 1.0
        r = r + add
    from pymc_sparse.precision.components import GraphComponents

    off = (~pattern.is_diag).astype(np.float64)
    comp = GraphComponents.from_adjacency(sp.csc_matrix(pattern.to_scipy(off)))
    proper = comp.proper_components
    C = np.zeros((proper.size, n))
    for row, c in enumerate(proper):
        C[row, comp.labels == c] = 1.0
    d = n - proper.size
    logdet_q = pt.constant(op.log_gdet) - 2.0 * d * pt.log(sigma)
    return Field(name, pattern, r / pt.square(sigma), pt.zeros(n), C, logdet_q)


# -- linear predictor --------------------------------------------------------------------
@dataclass
class Term:
    r"""One term :math:`\operatorname{diag}(l) A \operatorname{diag}(r)\, x_k` of a predictor."""

    k: int
    A: sp.csr_matrix
    left: list = field(default_factory=list)  # symbolic factors, scalar or (m,)
    right: list = field(default_factory=list)  # symbolic factors, scalar or (n_k,)

    @property
    def m(self) -> int:
        return self.A.shape[0]

    @property
    def identity(self) -> bool:
        A = self.A
        return (
            A.shape[0] == A.shape[1]
            and A.nnz == A.shape[0]
            and np.array_equal(A.indices, np.arange(A.shape[0]))
            and np.all(A.data == 1.0)
        )


def _const(v):
    """Numeric value of a constant or shared variable (after the model wrappers), else None."""
    v = _strip(v)
    if isinstance(v, Constant):
        return np.asarray(v.data)
    if isinstance(v, SharedVariable):
        return np.asarray(v.get_value())
    return None


def _is_scalar_like(v) -> bool:
    return all(v.type.broadcastable)


class LinearPredictor:
    """Decompose a predictor into an offset plus :class:`Term` s (see the module docstring)."""

    def __init__(self, fields: dict, what: str):
        self.fields = fields  # fgraph variable -> field index
        self.what = what
        self._dep: dict = {}

    def depends(self, v) -> bool:
        """Whether ``v`` is a function of any field."""
        if v not in self._dep:
            self._dep[v] = any(a in self.fields for a in ancestors([v]))
        return self._dep[v]

    def _fail(self, v, why: str):
        op = v.owner.op if v.owner is not None else v
        raise MarginalizeError(
            f"{self.what}: the predictor is not linear in the field(s) "
            f"{sorted(f.name for f in self.fields.values())} at `{op}`: {why}"
        )

    def __call__(self, v) -> tuple[object, list[Term]]:
        """Return ``(offset or None, terms)`` with ``v = offset + sum(terms)``."""
        if not self.depends(v):
            return v, []
        if v in self.fields:
            f = self.fields[v]
            # A scalar field is a one-row term, broadcast to the observations later.
            return None, [Term(f.index, sp.identity(f.n, format="csr"))]
        node = v.owner
        op = node.op
        if isinstance(op, ModelVar | SpecifyShape):
            return self(node.inputs[0])
        if isinstance(op, DimShuffle):
            order = tuple(op.new_order)
            mv = _matvec(node)
            if mv is not None:
                return self._dot(v, *mv)
            if order == tuple(range(v.type.ndim)) or (
                node.inputs[0].type.ndim == 0 and order in (("x",), ())
            ):
                return self(node.inputs[0])
            self._fail(v, "a field-dependent value is transposed or broadcast to a new axis.")
        if isinstance(op, Elemwise):
            return self._elemwise(v)
        if isinstance(op, AdvancedSubtensor1 | AdvancedSubtensor | Subtensor):
            return self._index(v)
        if isinstance(op, Dot) and v.type.ndim == 1:
            return self._dot(v, *node.inputs)
        self._fail(
            v,
            "this operation is not one of +, -, *, / by field-free terms, indexing "
            "by constants, or a product with a constant matrix.",
        )

    def _elemwise(self, v):
        node = v.owner
        sop = node.op.scalar_op
        ins = node.inputs
        if isinstance(sop, ps.Cast | ps.Identity):
            return self(ins[0])
        if isinstance(sop, ps.Add):
            parts = [self(i) for i in ins]
            return _sum_offsets([p[0] for p in parts]), self._merge([p[1] for p in parts], v)
        if isinstance(sop, ps.Sub):
            (oa, ta), (ob, tb) = self(ins[0]), self(ins[1])
            tb = [self._scale(t, pt.constant(-1.0)) for t in tb]
            ob = None if ob is None else -ob
            return _sum_offsets([oa, ob]), self._merge([ta, tb], v)
        if isinstance(sop, ps.Neg):
            o, ts = self(ins[0])
            return (None if o is None else -o), [self._scale(t, pt.constant(-1.0)) for t in ts]
        if isinstance(sop, ps.Mul):
            dep = [i for i in ins if self.depends(i)]
            if len(dep) != 1:
                self._fail(v, "a product of two field-dependent factors is not linear.")
            coef = None
            for i in ins:
                if i is not dep[0]:
                    coef = i if coef is None else coef * i
            o, ts = self(dep[0])
            return (None if o is None else o * coef), [self._scale(t, coef) for t in ts]
        if isinstance(sop, ps.TrueDiv):
            if self.depends(ins[1]):
                self._fail(v, "dividing by a field-dependent value is not linear.")
            o, ts = self(ins[0])
            inv = 1.0 / ins[1]
            return (None if o is None else o / ins[1]), [self._scale(t, inv) for t in ts]
        self._fail(v, f"{type(sop).__name__} of a field-dependent value is not linear.")

    def _scale(self, t: Term, c) -> Term:
        c = pt.as_tensor_variable(c)
        if c.type.ndim > 1 and not all(c.type.broadcastable[:-1]):
            self._fail(c, "a coefficient with more than one dimension.")
        if c.type.ndim > 1:
            c = c.reshape((-1,))
        if _is_scalar_like(c):
            return Term(t.k, t.A, t.left, [*t.right, c.reshape(())])
        if t.identity and t.m > 1:  # per node and per observation coincide
            return Term(t.k, t.A, t.left, [*t.right, c])
        return Term(t.k, t.A, [*t.left, c], t.right)

    def _merge(self, groups, v):
        terms = [t for g in groups for t in g]
        if len({t.m for t in terms} - {1}) > 1:
            self._fail(
                v,
                f"field terms of different lengths {sorted({t.m for t in terms})} "
                "are added (broadcasting a field is not supported).",
            )
        return terms

    def _index(self, v):
        node = v.owner
        x = node.inputs[0]
        if isinstance(node.op, Subtensor):
            idx = _basic_index(node)
        else:
            if len(node.inputs) != 2:
                self._fail(v, "only one index array per field is supported.")
            idx = _const(node.inputs[1])
        if idx is None or idx.ndim != 1 or idx.dtype.kind not in "iub":
            self._fail(v, "the field is indexed by a non-constant (or multi-dimensional) index.")
        if idx.dtype.kind == "b":
            idx = np.flatnonzero(idx)
        o, ts = self(x)
        out = []
        for t in ts:
            left = [f[pt.constant(idx)] if not _is_scalar_like(f) else f for f in t.left]
            out.append(Term(t.k, t.A[idx], left, t.right))
        if o is not None and o.type.ndim >= 1 and not o.type.broadcastable[-1]:
            o = o[pt.constant(idx)]
        return o, out

    def _dot(self, v, M, x):
        if self.depends(M) or x.type.ndim != 1:
            self._fail(v, "only constant-matrix @ field-vector products are supported.")
        Mv = _const(M)
        if Mv is None:
            self._fail(v, "the matrix multiplying the field is not a constant.")
        o, ts = self(x)
        out = []
        for t in ts:
            if t.left:
                self._fail(v, "a constant matrix times a per-observation scaled field.")
            out.append(Term(t.k, sp.csr_matrix(sp.csr_matrix(Mv) @ t.A), [], t.right))
        return (None if o is None else pt.dot(M, o)), out


def _matvec(node):
    """``(M, x)`` if ``node`` is PyTensor's matrix-vector product ``squeeze(M @ x[:, None])``."""
    op = node.op
    if tuple(op.new_order) != (0,) or node.inputs[0].type.ndim != 2:
        return None
    inner = node.inputs[0].owner
    if inner is None:
        return None
    core = getattr(inner.op, "core_op", inner.op)  # Matmul is a Blockwise of Dot
    if not isinstance(core, Dot):
        return None
    M, X = inner.inputs
    if X.owner is None or not isinstance(X.owner.op, DimShuffle):
        return None
    if tuple(X.owner.op.new_order) != (0, "x"):
        return None
    return M, X.owner.inputs[0]


def _basic_index(node):
    from pytensor.tensor.subtensor import indices_from_subtensor

    (idx,) = indices_from_subtensor(node.inputs[1:], node.op.idx_list)
    n = node.inputs[0].type.shape[0]
    if not isinstance(idx, slice) or n is None:
        return None
    parts = [None if s is None else _const(s) for s in (idx.start, idx.stop, idx.step)]
    if any(p is None and s is not None for p, s in zip(parts, (idx.start, idx.stop, idx.step))):
        return None
    return np.arange(n)[slice(*(None if p is None else int(p) for p in parts))]


def _sum_offsets(offsets):
    out = None
    for o in offsets:
        if o is not None:
            out = o if out is None else out + o
    return out
