r"""Observation families of :func:`~pymc_sparse.marginalize_laplace`: link and predictor.

:func:`family_from_rv` reads ``Poisson(exposure * exp(eta))``, ``Binomial(n,
sigmoid(eta))``, ``Bernoulli(sigmoid(eta))``, ``NegativeBinomial(mu=exp(eta), alpha)`` and
``Normal(eta, sigma)`` off a PyMC observed variable and returns the family's name, its
linear predictor ``eta`` and its own parameters; anything else raises
:class:`MarginalizeError` naming the variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymc.model.fgraph import ModelVar
from pytensor import scalar as ps
from pytensor.scalar.math import Sigmoid
from pytensor.tensor.basic import Alloc
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.random.basic import (
    BernoulliRV,
    BinomialRV,
    NegBinomialRV,
    NormalRV,
    PoissonRV,
)
from pytensor.tensor.shape import SpecifyShape

__all__ = ["Family", "MarginalizeError", "family_from_rv"]


class MarginalizeError(ValueError):
    """A model that ``marginalize_laplace`` cannot transform (the message says why)."""


@dataclass
class Family:
    """The observation family and its symbolic linear predictor ``eta``."""

    name: str
    eta: object
    params: dict


def _strip(v):
    """Skip PyMC's model wrappers, casts and broadcasts that do not change values."""
    while v.owner is not None:
        op = v.owner.op
        if isinstance(op, ModelVar | SpecifyShape):
            v = v.owner.inputs[0]
        elif isinstance(op, Elemwise) and isinstance(op.scalar_op, ps.Cast | ps.Identity):
            v = v.owner.inputs[0]
        else:
            break
    return v


def _is(v, scalar_op) -> bool:
    return (
        v.owner is not None
        and isinstance(v.owner.op, Elemwise)
        and isinstance(v.owner.op.scalar_op, scalar_op)
    )


def _log_link(name: str, mu, depends) -> tuple[object, object]:
    """``mu = exposure * exp(eta)`` -> ``(eta, exposure or None)``."""
    mu = _strip(mu)
    if _is(mu, ps.Exp):
        return mu.owner.inputs[0], None
    if _is(mu, ps.Mul):
        ins = mu.owner.inputs
        exps = [i for i in ins if depends(i)]
        if len(exps) == 1 and _is(_strip(exps[0]), ps.Exp):
            other = [i for i in ins if i is not exps[0]]
            exposure = other[0]
            for o in other[1:]:
                exposure = exposure * o
            return _strip(exps[0]).owner.inputs[0], exposure
    raise MarginalizeError(
        f"{name!r}: the mean must be exp(eta) or exposure * exp(eta) with eta linear in the "
        "field (write pm.math.exp(offset + ...)); found "
        f"{mu.owner.op if mu.owner else mu}."
    )


def _logit_link(name: str, p):
    p = _strip(p)
    if _is(p, Sigmoid):
        return p.owner.inputs[0]
    raise MarginalizeError(
        f"{name!r}: the probability must be sigmoid(eta) (pm.math.invlogit or logit_p=eta) with "
        f"eta linear in the field; found {p.owner.op if p.owner else p}."
    )


def family_from_rv(name: str, rv, depends) -> Family:
    """Identify the family of the observed ``rv`` and its linear predictor."""
    op = rv.owner.op
    ins = rv.owner.inputs[2:]
    if isinstance(op, PoissonRV):
        eta, exposure = _log_link(name, ins[0], depends)
        return Family("poisson", eta, {"exposure": exposure})
    if isinstance(op, BernoulliRV):
        return Family("bernoulli", _logit_link(name, ins[0]), {})
    if isinstance(op, BinomialRV):
        n, p = ins
        if depends(n):
            raise MarginalizeError(f"{name!r}: the number of trials depends on the field.")
        return Family("binomial", _logit_link(name, p), {"n_trials": n})
    if isinstance(op, NegBinomialRV):
        n, p = ins
        if depends(n):
            raise MarginalizeError(f"{name!r}: the dispersion depends on the field.")
        p = _strip(p)
        # pm.NegativeBinomial(mu, alpha) builds n = alpha, p = alpha / (mu + alpha).
        if _is(p, ps.TrueDiv) and _is(_strip(p.owner.inputs[1]), ps.Add):
            num = _base(p.owner.inputs[0])
            terms = _strip(p.owner.inputs[1]).owner.inputs
            rest = [t for t in terms if _base(t) is not num]
            if len(rest) == 1:
                eta, exposure = _log_link(name, rest[0], depends)
                return Family("negative_binomial", eta, {"dispersion": n, "exposure": exposure})
        raise MarginalizeError(
            f"{name!r}: write the negative binomial as pm.NegativeBinomial(mu=exp(eta), "
            "alpha=...) with eta linear in the field."
        )
    if isinstance(op, NormalRV):
        mu, sigma = ins
        if depends(sigma):
            raise MarginalizeError(f"{name!r}: the observation sd depends on the field.")
        return Family("normal", mu, {"sigma": sigma})
    raise MarginalizeError(
        f"{name!r} is a {type(op).__name__}: the Laplace marginal supports Poisson, Binomial, "
        "Bernoulli, NegativeBinomial and Normal observations."
    )


def _base(v):
    """Strip wrappers, casts and broadcasts (to compare two uses of one variable)."""
    while True:
        v = _strip(v)
        if v.owner is None or not isinstance(v.owner.op, DimShuffle | Alloc):
            return v
        v = v.owner.inputs[0]
