r"""Integrate a latent GMRF out of a PyMC model by a sparse Laplace approximation.

:func:`marginalize_laplace` takes a model written the ordinary way, a latent field drawn
from one of our GMRF distributions and observations whose predictor is linear in it,

.. math:: x \sim N(\mu, Q(\theta)^{-1}), \qquad
          y_i \mid x \sim p(y_i \mid \eta_i), \qquad \eta = o + A x,

and returns a new model in which ``x`` is gone and ``y`` has the likelihood
:class:`~pymc_sparse.distributions.laplace.LaplaceGMRF`, the Laplace approximation of
:math:`p(y \mid \theta) = \int p(y \mid x) p(x \mid \theta)\, dx` (exact for Normal
observations).  Several fields (BYM2's ICAR ``u`` and iid ``v``) are stacked into one
block-diagonal field; symbolic coefficients of the predictor (BYM2's
:math:`\sigma\sqrt{\rho/s}`) become symbolic values of :math:`A` on a static pattern.

How the model is rewritten follows pymc-extras' ``marginalize``: the model becomes a
``FunctionGraph`` (:func:`pymc.model.fgraph.fgraph_from_model`), in which every model
variable is a dummy ``ModelVar`` node; the observed node is replaced by one built on the
new likelihood, the field's nodes and the Deterministics computed from it are removed, and
:func:`pymc.model.fgraph.model_from_fgraph` builds the model back.  The graph analysis
(which fields, which family, which linear predictor) is in :mod:`._laplace_graph`.

References
----------
.. [1] Rue, H., Martino, S. and Chopin, N. (2009). Approximate Bayesian inference for
   latent Gaussian models by using integrated nested Laplace approximations. *J. R. Stat.
   Soc. B* 71, 319-392.
.. [2] Kristensen, K., Nielsen, A., Berg, C. W., Skaug, H. and Bell, B. M. (2016). TMB:
   automatic differentiation and Laplace approximation. *J. Stat. Softw.* 70(5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import scipy.sparse as sp
from pymc.model.fgraph import (
    ModelDeterministic,
    ModelFreeRV,
    ModelObservedRV,
    ModelPotential,
    fgraph_from_model,
    model_from_fgraph,
    model_observed_rv,
)
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.fg import Output

from pymc_sparse.inference._laplace_graph import (
    Field,
    LinearPredictor,
    MarginalizeError,
    Term,
    _const,
    family_from_rv,
    field_from_rv,
)
from pymc_sparse.linalg.pattern import SparsityPattern
from pymc_sparse.ops._index import const_index
from pymc_sparse.ops.matrix import SparseMatrix

__all__ = ["Analysis", "LaplaceInfo", "MarginalizeError", "analyse", "marginalize_laplace"]


@dataclass(frozen=True)
class LaplaceInfo:
    """What :func:`marginalize_laplace` removed, for :func:`~pymc_sparse.sample_latent`.

    Attributes
    ----------
    observed : str
        Name of the :class:`LaplaceGMRF` likelihood in the new model.
    fields : tuple of (name, start, stop, dims)
        Each integrated-out variable and its slice of the stacked latent vector
        (``dims`` None for a scalar).
    dropped : tuple of str
        Deterministics of the original model that depended on the field(s).
    source : pm.Model
        The original model (to recompute ``dropped`` from latent draws).
    """

    observed: str
    fields: tuple
    dropped: tuple
    source: object


def _expand_names(model, vars) -> list[str]:
    """Names of the free variables to integrate out (BYM2's name -> ``_u`` and ``_v``)."""
    if isinstance(vars, str | Variable):
        vars = [vars]
    names = []
    for v in vars:
        name = v if isinstance(v, str) else v.name
        if name not in model.named_vars:
            raise MarginalizeError(f"The model has no variable {name!r}.")
        var = model[name]
        if var in model.free_RVs:
            names.append(name)
        elif var in model.deterministics and {f"{name}_u", f"{name}_v"} <= set(model.named_vars):
            names += [f"{name}_u", f"{name}_v"]  # the two latent vectors of pms.BYM2
        elif var in model.observed_RVs:
            raise MarginalizeError(f"{name!r} is observed; pass the latent field's name.")
        else:
            raise MarginalizeError(
                f"{name!r} is not a free random variable (nor a BYM2 effect with {name}_u and "
                f"{name}_v); pass the latent GMRF variable(s)."
            )
    if len(set(names)) != len(names):
        raise MarginalizeError(f"A variable is listed twice in {names}.")
    return names


def _block_diagonal(fields: list[Field]) -> SparsityPattern:
    """Block-diagonal pattern of the stacked fields (lower CSC: blocks concatenate)."""
    indptr, indices = [np.zeros(1, np.int64)], []
    off = nnz = 0
    for f in fields:
        p = f.pattern
        indptr.append(p.indptr[1:] + nnz)
        indices.append(p.indices + off)
        off += p.n
        nnz += p.nnz
    return SparsityPattern(off, np.concatenate(indptr), np.concatenate(indices))


def _product(factors):
    out = None
    for f in factors:
        out = f if out is None else out * f
    return out


def _design(terms: list[Term], starts: list[int], m: int, n: int):
    r"""Stack the terms into one ``m x n`` design; constant, or ``(structure, values)``.

    A term :math:`\operatorname{diag}(l) A \operatorname{diag}(r)` contributes
    :math:`l_i a_{ij} r_j` at :math:`(i, \text{start}_k + j)`; entries of several terms at
    one position add.  Values are ordered like the CSR structure's sorted COO triplets,
    the order :class:`~pymc_sparse.distributions.marginal.ObservationMatrix` uses.
    """
    rows, cols, vals, syms = [], [], [], []
    for t in terms:
        coo = t.A.tocoo()
        r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
        rows.append(r)
        cols.append(c + starts[t.k])
        vals.append(coo.data.astype(np.float64))
        sym = None
        if t.left:
            left = pt.broadcast_to(_product(t.left), (m,))
            sym = left[const_index(r)]
        if t.right:
            right = _product(t.right)
            right = right[const_index(c)] if right.type.ndim else right
            sym = right if sym is None else sym * right
        syms.append(sym)
    struct = sp.csr_matrix(
        (np.ones(sum(r.size for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
        shape=(m, n),
    )
    struct.sum_duplicates()
    struct.sort_indices()
    if all(s is None for s in syms):
        A = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, n)
        )
        A.sum_duplicates()
        return A
    key_sorted = struct.tocoo()
    keys = key_sorted.row.astype(np.int64) * n + key_sorted.col
    values = pt.zeros(keys.size, dtype="float64")
    for r, c, v, s in zip(rows, cols, vals, syms):
        pos = np.searchsorted(keys, r * n + c)
        contrib = pt.constant(v) if s is None else pt.constant(v) * s
        values = pt.inc_subtensor(values[const_index(pos)], contrib)
    return struct, values


def _find_dependents(fgraph, field_vars, lp: LinearPredictor):
    """Split the model variables that depend on the fields: observed, dropped, forbidden."""
    observed, dropped = [], []
    for out in fgraph.outputs:
        if out in field_vars or out.owner is None:
            continue
        op = out.owner.op
        if not lp.depends(out.owner.inputs[0]):
            continue
        if isinstance(op, ModelObservedRV):
            observed.append(out)
        elif isinstance(op, ModelDeterministic):
            dropped.append(out)
        elif isinstance(op, ModelFreeRV | ModelPotential):
            kind = "free variable" if isinstance(op, ModelFreeRV) else "potential"
            raise MarginalizeError(
                f"The {kind} {out.name!r} depends on the field(s) being integrated out; only "
                "one observed variable may depend on them (add it to `vars`, or write it as "
                "part of that likelihood)."
            )
    return observed, dropped


@dataclass
class Analysis:
    """The latent Gaussian model read from a PyMC model (inputs of :class:`LaplaceGMRF`)."""

    fgraph: object
    fields: list
    field_vars: dict
    observed: object
    dropped: list
    starts: list
    Q: SparseMatrix
    mu: object
    A: object
    family: str
    offset: object
    params: dict
    constraint: object
    eta: object


def analyse(model: pm.Model, vars) -> Analysis:
    """Read fields, family and linear predictor (see :func:`marginalize_laplace`).

    The symbolic pieces live in the model's ``FunctionGraph`` (``Analysis.fgraph``), whose
    free variables are ``ModelFreeRV`` nodes.
    """
    names = _expand_names(model, vars)
    fgraph, memo = fgraph_from_model(model, inlined_views=True)
    field_vars = {}
    fields = []
    for k, name in enumerate(names):
        mv = memo[model[name]]
        f = field_from_rv(name, mv.owner.inputs[0])
        f.index = k
        scalar = model[name].type.ndim == 0
        f.dims = None if scalar else tuple(model.named_vars_to_dims.get(name) or ())
        fields.append(f)
        field_vars[mv] = f
    lp = LinearPredictor(field_vars, "model")
    for f in fields:
        if lp.depends(f.q_data) or lp.depends(f.mu):
            raise MarginalizeError(
                f"The prior of {f.name!r} depends on another field being integrated out; "
                "only independent fields (a block-diagonal precision) are supported."
            )
    observed, dropped = _find_dependents(fgraph, field_vars, lp)
    if len(observed) != 1:
        raise MarginalizeError(
            f"{len(observed)} observed variables depend on {names} "
            f"({[o.name for o in observed]}); marginalize_laplace needs exactly one."
        )
    obs_mv = observed[0]
    obs_rv, value, *_ = obs_mv.owner.inputs
    lp.what = f"{obs_mv.name!r}"
    if obs_rv.type.ndim != 1:
        raise MarginalizeError(f"{obs_mv.name!r} must be a vector of observations.")
    fam = family_from_rv(obs_mv.name, obs_rv, lp.depends)
    for key, p in fam.params.items():
        if p is not None and lp.depends(p):
            raise MarginalizeError(f"{obs_mv.name!r}: `{key}` depends on the field.")
    offset, terms = lp(fam.eta)
    m = obs_rv.type.shape[0]
    if m is None:
        m = int(np.size(_const(value)))
    for t in terms:
        if t.m == 1 and m > 1:  # a scalar field (intercept) broadcast to every observation
            t.A = sp.csr_matrix(t.A[np.zeros(m, np.int64)])
    bad = [t.m for t in terms if t.m != m]
    if bad:
        raise MarginalizeError(
            f"{obs_mv.name!r}: the predictor's field part has length {bad[0]}, the data {m}."
        )
    starts = np.concatenate([[0], np.cumsum([f.n for f in fields])]).tolist()
    n = starts[-1]
    pattern = _block_diagonal(fields)
    Q = SparseMatrix(pattern, pt.concatenate([pt.cast(f.q_data, "float64") for f in fields]))
    mu = pt.concatenate([pt.cast(f.mu, "float64") for f in fields])
    A = _design(terms, starts, m, n)
    intrinsic = [f.name for f in fields if f.constraint is not None]
    proper_blocks = [f.name for f in fields if f.constraint is None and not _diagonal(f)]
    if intrinsic and proper_blocks:
        raise MarginalizeError(
            f"{intrinsic} carry sum-to-zero constraints and {proper_blocks} are non-diagonal "
            "proper GMRFs: integrate them out in separate models (the per-component "
            "constraint would also apply to the proper field)."
        )
    constraint = "components" if intrinsic else None
    if offset is None:
        offset = pt.zeros(m)
    kwargs = {k: v for k, v in fam.params.items() if v is not None}
    return Analysis(
        fgraph,
        fields,
        field_vars,
        obs_mv,
        dropped,
        starts,
        Q,
        mu,
        A,
        fam.name,
        offset,
        kwargs,
        constraint,
        fam.eta,
    )


def marginalize_laplace(model: pm.Model, vars) -> pm.Model:
    r"""Return ``model`` with the latent GMRF ``vars`` integrated out by a Laplace approximation.

    Parameters
    ----------
    model : pm.Model
        A model whose latent field is a :class:`~pymc_sparse.SparseGMRF`,
        :class:`~pymc_sparse.CAR`, :class:`~pymc_sparse.ICAR` or the components of a
        :func:`~pymc_sparse.BYM2` (or an iid ``pm.Normal`` vector), and whose single
        observed variable depending on it is ``Poisson(E * exp(eta))``,
        ``Binomial(n, invlogit(eta))``, ``Bernoulli(invlogit(eta))``,
        ``NegativeBinomial(mu=exp(eta), alpha)`` or ``Normal(eta, sigma)``, with
        :math:`\eta` linear in the field: sums of field-free terms and of fields (possibly
        indexed by constant arrays, multiplied by symbolic scalars or vectors, or by a
        constant matrix).
    vars : str, Variable or list of them
        The field(s) to integrate out.  The name of a BYM2 effect stands for its two
        latent vectors ``{name}_u`` and ``{name}_v``.

    Returns
    -------
    pm.Model
        A new model without the field(s) and without the Deterministics computed from
        them (e.g. the BYM2 effect, relative risks), whose observed variable (same name) is
        a :class:`~pymc_sparse.distributions.laplace.LaplaceGMRF`.  Recover the field and
        those Deterministics with :func:`~pymc_sparse.sample_latent`; check the
        approximation with :func:`~pymc_sparse.inference.laplace_check.check_laplace`.

    Raises
    ------
    MarginalizeError
        Naming the variable and the reason, when a field is not a supported GMRF, another
        variable depends on it, the family is not supported or the predictor is not
        linear in the field.

    Examples
    --------
    .. code-block:: python

        model = models.scotland_bym2.build_model(data)        # BYM2 Poisson regression
        marginal = pms.marginalize_laplace(model, ["b"])        # b_u and b_v integrated out
        with marginal:
            idata = pm.sample()
        latent = pms.sample_latent(idata, marginal)             # b_u, b_v, b, rr
    """
    from pymc_sparse.distributions.laplace import LaplaceGMRF

    a = analyse(model, vars)
    new_rv = LaplaceGMRF.dist(
        Q=a.Q,
        mu=a.mu,
        A=a.A,
        family=a.family,
        offset=a.offset,
        constraint=a.constraint,
        **a.params,
    )
    _, value, *dims = a.observed.owner.inputs
    new_mv = model_observed_rv(new_rv, _as_float_value(value), *dims)
    new_mv.name = a.observed.name
    fgraph = a.fgraph
    if any(not isinstance(c.op, Output) for c, _ in fgraph.clients[a.observed]):
        raise MarginalizeError(
            f"Other variables are computed from the data of {a.observed.name!r}."
        )
    remove = {a.observed} | set(a.field_vars) | set(a.dropped)
    for i in reversed(range(len(fgraph.outputs))):
        if fgraph.outputs[i] in remove:
            fgraph.remove_output(i)
    fgraph.add_output(new_mv, import_missing=True)
    new_model = model_from_fgraph(fgraph, mutate_fgraph=True)
    new_model._pms_laplace = LaplaceInfo(
        observed=a.observed.name,
        fields=tuple(
            (f.name, a.starts[k], a.starts[k + 1], f.dims) for k, f in enumerate(a.fields)
        ),
        dropped=tuple(d.name for d in a.dropped),
        source=model,
    )
    return new_model


def _as_float_value(value):
    """Return the observed data as float64 (counts are integers; LaplaceGMRF is float)."""
    if value.type.dtype == "float64":
        return value
    if isinstance(value, Constant):
        return pt.constant(np.asarray(value.data, dtype=np.float64), name=value.name)
    if isinstance(value, SharedVariable):
        # A float copy: set_data on the original no longer reaches the new model.
        return pytensor.shared(np.asarray(value.get_value(), np.float64), name=value.name)
    raise MarginalizeError(f"Cannot convert the observed data {value} to float64.")


def _diagonal(f: Field) -> bool:
    return bool(np.all(f.pattern.is_diag))
