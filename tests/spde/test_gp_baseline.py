"""The dense baseline of the SPDE benchmarks: Matérn nu = 1 with order-specific Bessel ops."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.special import kv

from models.spde_ames import Matern1, bessel_k0, bessel_k1


def test_bessel_ops_match_scipy_general_order():
    x = np.array([1e-3, 0.1, 1.0, 3.0, 20.0, 700.0])
    u = pt.dvector("u")
    f = pytensor.function([u], [bessel_k0(u), bessel_k1(u)])
    k0, k1 = f(x)
    np.testing.assert_allclose(k0, kv(0, x), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(k1, kv(1, x), rtol=1e-12, atol=1e-300)


def test_bessel_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 8.0, size=7)
    pytensor.gradient.verify_grad(bessel_k0, [x], rng=rng, eps=1e-7)
    pytensor.gradient.verify_grad(bessel_k1, [x], rng=rng, eps=1e-7)
    # d/du [u K1(u)] = -u K0(u): the gradient of the covariance.
    u = pt.dvector("u")
    g = pytensor.function([u], pytensor.grad(pt.sum(u * bessel_k1(u)), u))(x)
    np.testing.assert_allclose(g, -x * kv(0, x), rtol=1e-12)


# The distance matrix is a dot product: PyTensor looks for BLAS and, without one, warns.
@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")
def test_matern1_gradient_in_lengthscale():
    X = np.random.default_rng(1).uniform(size=(5, 2))
    ls = pt.dscalar("ls")
    K = Matern1(2, ls=ls)(pt.as_tensor(X))
    f = pytensor.function([ls], [pt.sum(K), pytensor.grad(pt.sum(K), ls)])
    r = np.linalg.norm(X[:, None] - X[None], axis=2)

    def ref(ell):
        u = r / ell
        return np.sum(np.where(u > 0, u * kv(1, np.maximum(u, 1e-300)), 1.0))

    val, grad = f(0.3)
    np.testing.assert_allclose(val, ref(0.3), rtol=1e-6)
    np.testing.assert_allclose(grad, (ref(0.3 + 1e-6) - ref(0.3 - 1e-6)) / 2e-6, rtol=1e-5)
