"""ICAR's zero-sum transform on the fused Op against the gather/scatter graph it replaced."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from pymc_sparse.distributions.icar import ICAR, ComponentZeroSumTransform
from pymc_sparse.ops._index import const_index
from tests.distributions.test_icar import mixed_graph
from tests.gmrf_checks import scotland_adjacency


class GraphZeroSumTransform(ComponentZeroSumTransform):
    """The map as it was before the fused Op: 2-d gathers and scatters (the reference)."""

    @staticmethod
    def _batch(value, m):
        value = pt.as_tensor_variable(value)
        return value.reshape((-1, m)), value.shape[:-1]

    def backward(self, value, *inputs):
        lay = self.layout
        free, pos, comp = (const_index(lay[k]) for k in ("free", "proper_pos", "proper_comp"))
        flat, batch = self._batch(value, lay["free"].size)
        x = pt.zeros((flat.shape[0], lay["n"]), dtype="float64")
        x = pt.set_subtensor(x[:, free], flat)
        if lay["n_proper"]:
            zp = flat[:, pos]
            s = pt.zeros((lay["n_proper"], flat.shape[0]), dtype="float64")
            s = pt.inc_subtensor(s[comp], zp.T).T
            m = pt.constant(lay["sizes"])
            norm = s / (pt.sqrt(m) + m)
            free_pos = const_index(lay["free"][lay["proper_pos"]])
            x = pt.inc_subtensor(x[:, free_pos], -norm[:, comp])
            x = pt.set_subtensor(x[:, const_index(lay["pivots"])], -s / pt.sqrt(m))
        return x.reshape(pt.concatenate([batch, [lay["n"]]]), ndim=pt.as_tensor(value).ndim)

    def forward(self, value, *inputs):
        lay = self.layout
        flat, batch = self._batch(value, lay["n"])
        z = flat[:, const_index(lay["free"])]
        if lay["n_proper"]:
            m = pt.constant(lay["sizes"])
            s = -flat[:, const_index(lay["pivots"])] * pt.sqrt(m)
            norm = s / (pt.sqrt(m) + m)
            pos, comp = const_index(lay["proper_pos"]), const_index(lay["proper_comp"])
            z = pt.inc_subtensor(z[:, pos], norm[:, comp])
        return z.reshape(pt.concatenate([batch, [lay["free"].size]]), ndim=pt.as_tensor(value).ndim)


@pytest.mark.parametrize("singletons", ["iid", "zero"])
def test_transform_matches_the_graph_version(singletons, rng):
    W = mixed_graph(rng)
    pattern = ICAR.dist(W=W, singletons=singletons).owner.op.pattern
    new = ComponentZeroSumTransform(pattern, singletons)
    old = GraphZeroSumTransform(pattern, singletons)
    nf, n = new.layout["free"].size, W.shape[0]
    z, x, w = pt.dtensor3("z"), pt.dvector("x"), pt.dvector("w")
    zv, xv, wv = rng.normal(size=(2, 3, nf)), rng.normal(size=n), rng.normal(size=n)
    outs = []
    for tr in (new, old):
        xb = tr.backward(z)
        zf = tr.forward(x)
        outs.append(
            [
                xb,
                zf,
                tr.log_jac_det(z),
                pytensor.grad(pt.sum(xb * w), z),
                pytensor.grad(pt.sum(zf * zf), x),
            ]
        )
    f = pytensor.function([z, x, w], outs[0] + outs[1], mode="FAST_RUN")
    res = f(zv, xv, wv)
    for a, b in zip(res[:5], res[5:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("mode", ["FAST_RUN", "NUMBA"])
def test_model_logp_and_gradient_match_the_graph_version(mode, rng):
    """The ICAR model's logp and dlogp on the value variable are those of the old map."""
    W = scotland_adjacency("islands")
    pattern = ICAR.dist(W=W).owner.op.pattern
    fns = []
    for tr in (None, GraphZeroSumTransform(pattern, "iid")):
        with pm.Model() as m:
            sigma = pm.HalfNormal("sigma", 1.0)
            ICAR("phi", W=W, sigma=sigma, **({} if tr is None else {"default_transform": tr}))
        f = m.logp_dlogp_function(ravel_inputs=True, mode=mode)
        f.set_extra_values({})
        fns.append(f)
    q = rng.normal(size=1 + W.shape[0] - 1)  # sigma (log) and 55 free coordinates
    (lp_new, g_new), (lp_old, g_old) = fns[0](q), fns[1](q)
    np.testing.assert_allclose(lp_new, lp_old, rtol=1e-13)
    np.testing.assert_allclose(g_new, g_old, rtol=1e-12, atol=1e-13)
