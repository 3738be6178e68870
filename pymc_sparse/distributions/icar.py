r"""Intrinsic CAR ``ICAR(W, sigma)`` with a hard sum-to-zero constraint per component.

The ICAR (Besag) model has the improper density
:math:`p(x) \propto \sigma^{-(n-k)} \exp\{-x^\top R x / (2\sigma^2)\}`, :math:`R = D - W`,
where :math:`k` is the number of connected components: :math:`R` has one zero eigenvalue
per component, so each component's mean is not identified and is fixed by a constraint
:math:`\sum_{i \in C} x_i = 0`.  Here the constraint is *hard*: the sampler's free
coordinates are :math:`n - k` numbers mapped isometrically onto the constrained subspace
(:class:`ComponentZeroSumTransform`), and the log-density is the normalised density on
that subspace.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import scipy.sparse as sp
from pymc.distributions.dist_math import check_parameters
from pymc.distributions.distribution import Continuous, _support_point
from pymc.distributions.transforms import _default_transform
from pymc.logprob.abstract import _logprob
from pymc.logprob.transforms import Transform
from pytensor.tensor.random.op import RandomVariable

from pymc_sparse.distributions._utils import (
    as_scalar_param,
    check_support_length,
    constant_value,
    core_numeric,
    core_param,
    support_point_fill,
)
from pymc_sparse.linalg.lru import lru_function
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops.matrix import SparseMatrix
from pymc_sparse.ops.zerosum import zero_sum_backward, zero_sum_forward
from pymc_sparse.precision.components import GraphComponents
from pymc_sparse.precision.graph import guard_adjacency, read_adjacency, validate_adjacency

__all__ = ["ICAR", "ICARRV", "ComponentZeroSumTransform", "icar_logp", "icar_structure"]

_LOG_2PI = float(np.log(2.0 * np.pi))
_SINGLETON_POLICIES = ("iid", "zero")


def icar_structure(W) -> tuple[SparsityPattern, np.ndarray, GraphComponents]:
    """Pattern and stored values of :math:`R = D - W`, and the graph's components."""
    W = validate_adjacency(W)
    comp = GraphComponents.from_adjacency(W)
    pattern, r_data = SparsityPattern.from_scipy(comp.structure)
    return pattern, r_data, comp


def _components_from_structure(pattern: SparsityPattern, r_data: np.ndarray) -> GraphComponents:
    off = np.where(pattern.is_diag, 0.0, -np.asarray(r_data, dtype=np.float64))
    W = pattern.to_scipy(off)
    W.eliminate_zeros()
    return GraphComponents.from_adjacency(sp.csc_matrix(W))


@lru_function(maxsize=64)
def _layout(pattern: SparsityPattern, singletons: str) -> dict:
    """Index arrays of the per-component zero-sum map (depends on the pattern only)."""
    off = (~pattern.is_diag).astype(np.float64)
    comp = GraphComponents.from_adjacency(sp.csc_matrix(pattern.to_scipy(off)))
    proper = comp.proper_components
    comp_pos = np.full(comp.n_components, -1, dtype=np.int64)
    comp_pos[proper] = np.arange(proper.size)
    free = comp.reduced_nodes
    if singletons == "iid":
        free = np.sort(np.concatenate([free, np.flatnonzero(comp.singleton)]))
    in_proper = ~comp.singleton[free]
    return {
        "n": comp.n,
        "free": free,  # nodes carried by the free coordinates, in order
        "proper_pos": np.flatnonzero(in_proper),  # positions (in z) of proper-component nodes
        "proper_comp": comp_pos[comp.labels[free[in_proper]]],  # their component (0..kp-1)
        "pivots": comp.pivots,  # one per proper component, in component order
        "sizes": comp.sizes[proper].astype(np.float64),
        "n_proper": int(proper.size),
        "n_singletons": int(comp.singleton.sum()),
        # component of each free coordinate, -1 outside proper components (copied)
        "comp": np.where(in_proper, comp_pos[comp.labels[free]], -1).astype(np.int64),
        "labels": comp.labels,
        "proper": proper,
    }


@lru_function(maxsize=64)
def _soft_groups(pattern: SparsityPattern, singletons: str):
    """Node order and bounds of the groups a soft constraint pins, or None for one group.

    The groups are the proper components, and with ``singletons="zero"`` each singleton
    (a group of one).  ``(order, starts, ends, sizes)``: group ``g`` holds the nodes
    ``order[starts[g]:ends[g]]``.  None when one group holds every node in order (a
    connected graph), where the sum is ``x.sum()``.
    """
    lay = _layout(pattern, singletons)
    labels = lay["labels"]
    pinned = np.isin(labels, lay["proper"])
    if singletons == "zero":
        pinned |= np.bincount(labels)[labels] == 1
    if pinned.all() and lay["proper"].size == 1:
        return None
    order = np.flatnonzero(pinned)
    order = order[np.argsort(labels[order], kind="stable")]
    _, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    return order, starts, starts + sizes, sizes.astype(np.float64)


class ComponentZeroSumTransform(Transform):
    r"""Isometry from :math:`\mathbb{R}^{n-k}` onto the per-component zero-sum subspace.

    The subspace is :math:`\{x : \sum_{i\in C} x_i = 0\ \forall C\}`.
    Within each component of size :math:`m` the map is PyMC's ``ZeroSumTransform``
    (a Householder reflection): with :math:`s` the sum of the :math:`m-1` free values
    :math:`z`, :math:`x_{\text{free}} = z - s/(\sqrt m + m)` and the pivot (the
    component's last node) :math:`x_p = -s/\sqrt m`.  The map is an isometry onto the
    subspace, so the log-Jacobian is 0 and the density of :math:`z` is the density of
    :math:`x` with respect to the subspace's Lebesgue measure.  Singleton nodes are copied
    (``singletons="iid"``) or fixed at 0 (``"zero"``).
    """

    name = "zerosum"  # no underscore: PyMC strips "_{name}__" to recover "phi"

    def __init__(self, pattern: SparsityPattern, singletons: str = "iid"):
        self.pattern = pattern
        self.singletons = singletons
        self.layout = _layout(pattern, singletons)

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and other.pattern == self.pattern
            and other.singletons == self.singletons
        )

    def __hash__(self):
        return hash((type(self), self.pattern, self.singletons))

    def _layout_args(self):
        lay = self.layout
        return lay["n"], lay["free"], lay["comp"], lay["pivots"], lay["sizes"]

    def backward(self, value, *inputs):
        """Free coordinates ``(..., n - k)`` to the constrained vector ``(..., n)``."""
        # One fused O(n) pass (pymc_sparse.ops.zerosum): gathers and scatters along the
        # batch's second axis ran in Python under the C backend (np.add.at), 95% of an
        # ICAR log-density + gradient at n = 1,921 (docs/performance/small_n.md).
        return zero_sum_backward(value, *self._layout_args())

    def forward(self, value, *inputs):
        """Constrained vector ``(..., n)`` to free coordinates ``(..., n - k)``."""
        return zero_sum_forward(value, *self._layout_args())

    def log_jac_det(self, value, *inputs):
        """0: the map is an isometry onto the constrained subspace."""
        return pt.zeros_like(pt.as_tensor_variable(value).sum(axis=-1))


def icar_logp(
    pattern, value, r_data, sigma, *, log_gdet: float, singletons: str, zero_sum_stdev=None
):
    r"""ICAR log-density on the constrained subspace, ``-inf`` for :math:`\sigma \le 0`.

    .. math:: -\tfrac{d}{2}\log 2\pi + \tfrac12 \log|R|_* - d \log\sigma
              - \frac{x^\top R x + \sum_{i \in S} x_i^2}{2\sigma^2},

    :math:`d` the dimension of the subspace (:math:`n - k`, where singletons count as
    components with ``singletons="zero"`` and as iid :math:`N(0, \sigma^2)` dimensions,
    set :math:`S`, with ``"iid"``) and :math:`|R|_*` the product of the non-zero
    eigenvalues (a constant, computed once by the matrix-tree theorem).  With a
    ``zero_sum_stdev`` the value lives in :math:`\mathbb{R}^n` and the soft constraint's
    density of each group sum is added (:func:`_soft_constraint_logp`).
    """
    lay = _layout(pattern, singletons)
    n = pattern.n
    dims = n - lay["n_proper"] - (lay["n_singletons"] if singletons == "zero" else 0)
    valid = sigma > 0
    sigma_s = pt.switch(valid, sigma, 1.0)
    R = SparseMatrix(pattern, r_data)
    x = pt.as_tensor_variable(value)
    if x.type.ndim == 1:
        quad = R.quad_form(x)
    else:
        quad = R.quad_form(x.reshape((-1, n)).T).reshape(x.shape[:-1])
    if singletons == "iid" and lay["n_singletons"]:
        single = np.setdiff1d(lay["free"], lay["free"][lay["proper_pos"]])
        quad = quad + pt.sum(pt.square(x[..., single]), axis=-1)
    # A scalar coefficient times the form, and the -inf of an invalid sigma added rather
    # than switched: the gradient in x is then one multiply per node (2 c Rx), not a
    # per-node switch and division (docs/performance/small_n.md).
    coef = -0.5 / pt.sqr(sigma_s)
    logp = -0.5 * dims * _LOG_2PI + 0.5 * log_gdet - dims * pt.log(sigma_s) + coef * quad
    if zero_sum_stdev is not None:
        logp = logp + _soft_constraint_logp(pattern, x, singletons, zero_sum_stdev)
    return logp + pt.switch(valid, 0.0, -np.inf), valid


def _soft_constraint_logp(pattern, x, singletons: str, stdev: float):
    r"""Log-density of the group sums under ``pm.ICAR``'s soft constraint.

    Each group :math:`c` (a proper component, or a pinned singleton) of :math:`m_c` nodes
    has :math:`S_c = \sum_{i \in c} x_i \sim N(0, s_c^2)`, :math:`s_c = \text{stdev}\,
    m_c`.  The direction :math:`1_c / \sqrt{m_c}` is orthogonal to the range of
    :math:`R`, so this density on the coordinate :math:`S_c / \sqrt{m_c}` completes the
    subspace density of :func:`icar_logp` to a normalised density on
    :math:`\mathbb{R}^n`:

    .. math:: \sum_c -\tfrac12 \log 2\pi + \tfrac12\log m_c - \log s_c
              - \frac{S_c^2}{2 s_c^2}.
    """
    groups = _soft_groups(pattern, singletons)
    if groups is None:
        sizes = np.array([float(pattern.n)])
        sums = x.sum(axis=-1, keepdims=True)
    else:
        order, starts, ends, sizes = groups
        # Cumulative sums of the grouped nodes: every group's sum in O(n), no scatter.
        cs = pt.cumsum(x[..., order], axis=-1)
        cs = pt.concatenate([pt.zeros_like(cs[..., :1]), cs], axis=-1)
        sums = cs[..., ends] - cs[..., starts]
    s = stdev * sizes
    const = float(np.sum(-0.5 * _LOG_2PI + 0.5 * np.log(sizes) - np.log(s)))
    return const - 0.5 * pt.sum(pt.square(sums * (1.0 / s)), axis=-1)


def _check_zero_sum_stdev(value) -> float | None:
    """Return ``zero_sum_stdev`` as a positive float, or None for the exact constraint."""
    if value is None:
        return None
    v = constant_value(value)
    if v is None or v.size != 1:
        raise TypeError(
            "`zero_sum_stdev` must be one constant number (pm.ICAR's soft constraint: "
            f"sd of each component's sum / its size), got {value!r}; leave it None for the "
            "exact sum-to-zero constraint."
        )
    v = float(v.ravel()[0])
    if not (np.isfinite(v) and v > 0):
        raise ValueError(
            f"`zero_sum_stdev` must be a finite number > 0, got {v}; leave it None for the "
            "exact sum-to-zero constraint."
        )
    return v


class ICARRV(RandomVariable):
    r"""RandomVariable of :class:`ICAR`.

    Props: the pattern of :math:`R`, the singleton policy, the constant
    :math:`\log|R|_*` and ``zero_sum_stdev`` (None: the exact constraint).
    """

    name = "sparse_icar"
    signature = "(k),()->(m)"
    dtype = "float64"
    _print_name = ("ICAR", "\\operatorname{ICAR}")
    __props__ = (*RandomVariable.__props__, "pattern", "singletons", "log_gdet", "zero_sum_stdev")

    def __init__(self, pattern=None, singletons="iid", log_gdet=0.0, zero_sum_stdev=None, **kwargs):
        if not isinstance(pattern, SparsityPattern):
            raise TypeError(f"`pattern` must be a SparsityPattern, got {type(pattern).__name__}.")
        self.pattern = pattern
        self.singletons = singletons
        self.log_gdet = float(log_gdet)
        self.zero_sum_stdev = None if zero_sum_stdev is None else float(zero_sum_stdev)
        super().__init__(**kwargs)

    def _supp_shape_from_params(self, dist_params, param_shapes=None):
        """Return the support shape ``(n,)``: the order of ``R``, not read from a parameter."""
        return (self.pattern.n,)

    def make_node(self, rng, size, r_data, sigma):
        """Check and cast the parameters, then build the node."""
        r_data = pt.cast(pt.as_tensor_variable(r_data), "float64")
        sigma = pt.cast(pt.as_tensor_variable(sigma), "float64")
        return super().make_node(rng, size, r_data, sigma)

    def rng_fn(self, rng, r_data, sigma, size):
        """Exact draws of the constrained ICAR (see :mod:`pymc_sparse.precision.components`)."""
        sigma = np.asarray(sigma, dtype=np.float64)
        if np.any(sigma <= 0):
            raise ValueError(f"ICAR draws need sigma > 0, got {sigma}.")
        comp = _components_from_structure(self.pattern, core_numeric(r_data, 1))
        if size is None:
            size = sigma.shape
        x = comp.sample_constrained(tuple(size), rng, self.singletons) * sigma[..., None]
        groups = _soft_groups(self.pattern, self.singletons)
        if self.zero_sum_stdev is not None:
            # Each group sum S_c ~ N(0, (stdev m_c)^2), spread evenly over the group:
            # every node of c moves by S_c / m_c ~ N(0, stdev^2).
            if groups is None:
                order, sizes = np.arange(self.pattern.n), np.array([self.pattern.n])
            else:
                order, _, _, sizes = groups
            shift = rng.normal(size=(*x.shape[:-1], sizes.size)) * self.zero_sum_stdev
            x[..., order] += shift[..., np.repeat(np.arange(sizes.size), sizes.astype(int))]
        return x


@_logprob.register(ICARRV)
def icar_rv_logp(op: ICARRV, values, rng, size, r_data, sigma, **kwargs):
    """Log-density of :class:`ICAR` on the constrained subspace."""
    [value] = values
    r_data = core_param(r_data, 1, "W")
    logp, valid = icar_logp(
        op.pattern,
        value,
        r_data,
        sigma,
        log_gdet=op.log_gdet,
        singletons=op.singletons,
        zero_sum_stdev=op.zero_sum_stdev,
    )
    return check_parameters(logp, valid, msg="sigma > 0")


@_support_point.register(ICARRV)
def icar_support_point(op, rv, rng, size, r_data, sigma):
    """Return zero, which satisfies every constraint."""
    return support_point_fill(op, size, [r_data, sigma], 0.0)


@_default_transform.register(ICARRV)
def icar_default_transform(op, rv):
    """Return the hard per-component sum-to-zero map (none under a soft constraint)."""
    if op.zero_sum_stdev is not None:
        return None
    return ComponentZeroSumTransform(op.pattern, op.singletons)


class ICAR(Continuous):
    r"""Intrinsic CAR (Besag) field with a sum-to-zero constraint per connected component.

    .. math::

        \log p(x \mid \sigma) = -\frac{d}{2}\log 2\pi + \frac12\log|R|_* - d\log\sigma
        - \frac{1}{2\sigma^2}\sum_{i \sim j} w_{ij}(x_i - x_j)^2
        \quad\text{on}\quad \Big\{x : \sum_{i\in C} x_i = 0 \text{ for every component } C\Big\},

    :math:`R = D - W`, :math:`d = n - k` with :math:`k` the number of connected components,
    :math:`|R|_*` the product of the non-zero eigenvalues of :math:`R`.

    ========  =====================================================
    Support   :math:`x \in \mathbb{R}^n`, each component sums to 0
    Mean      0
    Variance  :math:`\sigma^2 R^+` (Moore-Penrose inverse)
    ========  =====================================================

    Parameters
    ----------
    W : ndarray, scipy.sparse matrix, PyTensor constant or shared variable
        Symmetric, non-negative adjacency matrix (binary or weighted), zero diagonal; every
        form ``pm.ICAR`` accepts.  Read when the variable is created; a shared ``W``
        changed later with ``pm.set_data`` makes evaluation raise
        :class:`~pymc_sparse.precision.graph.AdjacencyChangedError`.
    sigma : tensor_like of float, default 1
        Scalar conditional standard deviation, :math:`\sigma > 0`.
    zero_sum_stdev : float, optional
        None (default): the constraint is exact, as above.  A number :math:`\epsilon > 0`:
        ``pm.ICAR``'s soft constraint instead, per component: the value is free in
        :math:`\mathbb{R}^n` and each component's sum :math:`S_c \sim N(0, (\epsilon
        m_c)^2)` (:math:`m_c` its size; ``pm.ICAR``'s default is 0.001), with the density
        normalised (see Notes).  Its one stiff direction per component changes how a
        sampler moves: with nutpie on the NYC model, 0.001 gives trajectories 3x shorter
        than the exact constraint, and fewer effective draws per draw
        (``docs/performance/small_n.md``).
    singletons : {"iid", "zero"}, default "iid"
        Nodes without neighbours have no ICAR term.  ``"iid"``: :math:`x_i \sim N(0,
        \sigma^2)`, independent (R-INLA's convention for scaled models; Freni-Sterrantino
        et al. 2018).  ``"zero"``: :math:`x_i = 0`.

    Notes
    -----
    Differences from ``pm.ICAR`` (PyMC 5.28), which uses one *soft* global constraint
    :math:`\sum_i x_i \sim N(0, (0.001 n)^2)`:

    * the factor :math:`\sigma^{-(n-k)}` is included (``pm.ICAR`` omits it, so with a
      random ``sigma`` its posterior is wrong);
    * the constraint holds per connected component (a global one leaves each island's mean
      free) and exactly: the value variable has :math:`n - k` free coordinates mapped by
      :class:`ComponentZeroSumTransform`;
    * ``zero_sum_stdev`` has ``pm.ICAR``'s meaning (the sum's sd does not scale with
      :math:`\sigma`), but holds per component, its density is normalised, and under
      ``singletons="zero"`` it pins each singleton as a group of one;
    * weighted ``W`` is allowed; random draws are implemented (exactly constrained);
    * the log-density is normalised on the constrained subspace (constants included).

    The log-density itself is invariant to adding a constant to a component, so a value
    supplied directly (``observed=`` or ``transform=None``) is scored as its projection
    onto the constraint.

    References
    ----------
    .. [1] Besag, J., York, J. and Mollié, A. (1991). Bayesian image restoration, with two
       applications in spatial statistics. *Ann. Inst. Statist. Math.* 43, 1-20.
    .. [2] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*, 3.2.
    .. [3] Freni-Sterrantino, A., Ventrucci, M. and Rue, H. (2018). A note on intrinsic
       conditional autoregressive models for disconnected graphs. *Spatial and
       Spatio-temporal Epidemiology* 26, 25-34.

    Examples
    --------
    .. code-block:: python

        with pm.Model():
            sigma = pm.HalfNormal("sigma", 1.0)
            phi = pms.ICAR("phi", W=W)           # non-centred: unit ICAR ...
            effect = sigma * phi                   # ... scaled outside
    """

    rv_type = ICARRV

    @classmethod
    def rv_op(
        cls,
        r_data,
        sigma,
        *,
        pattern,
        singletons,
        log_gdet,
        zero_sum_stdev=None,
        size=None,
        rng=None,
        dtype=None,
    ):
        """Build the RandomVariable node (the pattern becomes an Op prop)."""
        op = ICARRV(
            pattern=pattern,
            singletons=singletons,
            log_gdet=log_gdet,
            zero_sum_stdev=zero_sum_stdev,
        )
        return op(r_data, sigma, size=size, rng=rng)

    @classmethod
    def dist(cls, W, sigma=1.0, zero_sum_stdev=None, *, singletons: str = "iid", **kwargs):
        """Validate the inputs and create the unnamed variable (see the class docstring)."""
        if singletons not in _SINGLETON_POLICIES:
            raise ValueError(
                f"`singletons` must be one of {_SINGLETON_POLICIES}, got {singletons!r}."
            )
        zero_sum_stdev = _check_zero_sum_stdev(zero_sum_stdev)
        W_value, W_source = read_adjacency(W)
        pattern, r_data, comp = icar_structure(W_value)
        check_support_length(kwargs, pattern.n, f"W ({pattern.n} x {pattern.n})")
        s = constant_value(sigma)
        if s is not None and s.size == 1 and not float(s.ravel()[0]) > 0:
            raise ValueError(f"`sigma` must be > 0, got {float(s.ravel()[0])}.")
        sigma = as_scalar_param(sigma, "sigma")
        # A shared W (pm.Data) is read now; raise if pm.set_data changes it later.
        sigma = guard_adjacency(sigma, W_source, W_value)
        return super().dist(
            [pt.constant(r_data), sigma],
            pattern=pattern,
            singletons=singletons,
            log_gdet=comp.log_generalized_det,
            zero_sum_stdev=zero_sum_stdev,
            **kwargs,
        )
