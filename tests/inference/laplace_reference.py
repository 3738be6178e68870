"""Dense NumPy reference of the embedded Laplace approximation (tests only).

Works in coordinates of the constrained subspace, x = B z with B an orthonormal basis of
null(C), so it shares no formula with the sparse implementation's kriging and
generalised-determinant terms.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

_LOG_2PI = float(np.log(2 * np.pi))


def dense_laplace(Q, mu, A, fam, y, off, ntr, phi, C=None, intrinsic=False):
    """Return ``(value, x_mode, H)`` by a dense Newton iteration to machine precision."""
    Q = np.asarray(Q, float)
    A = np.asarray(A, float)
    n = Q.shape[0]
    mu = np.broadcast_to(mu, (n,)).astype(float)
    if C is None:
        B = np.eye(n)
        P, z0 = Q, mu
    else:
        B = sla.null_space(np.atleast_2d(C))
        if intrinsic:
            P = B.T @ Q @ B
            z0 = np.linalg.solve(P, B.T @ Q @ mu)
        else:
            S = np.linalg.inv(Q)
            V = C @ S @ C.T
            m_c = mu - S @ C.T @ np.linalg.solve(V, C @ mu)
            Sc = S - S @ C.T @ np.linalg.solve(V, C @ S)
            P = np.linalg.inv(B.T @ Sc @ B)
            P = 0.5 * (P + P.T)
            z0 = B.T @ m_c
    d = B.shape[1]
    AB = A @ B
    z = np.zeros(d)
    for _ in range(200):
        eta = off + AB @ z
        _, l1, l2, _ = fam.derivs(y, eta, ntr, phi)
        g = AB.T @ l1 - P @ (z - z0)
        Hz = P + AB.T @ (-l2[:, None] * AB)
        step = np.linalg.solve(Hz, g)
        z = z + step
        if np.max(np.abs(step)) < 1e-15 * (1 + np.max(np.abs(z))):
            break
    eta = off + AB @ z
    ll, l1, l2, _ = fam.derivs(y, eta, ntr, phi)
    Hz = P + AB.T @ (-l2[:, None] * AB)
    logp_z = -0.5 * d * _LOG_2PI + 0.5 * np.linalg.slogdet(P)[1] - 0.5 * (z - z0) @ P @ (z - z0)
    value = np.sum(ll) + logp_z + 0.5 * d * _LOG_2PI - 0.5 * np.linalg.slogdet(Hz)[1]
    H = Q + A.T @ (-l2[:, None] * A)
    return value, B @ z, H


def fd5(f, x0, direction, h=1e-3):
    """Five-point central difference of ``f`` along ``direction``."""
    g = lambda t: f(x0 + t * direction)  # noqa: E731
    return (-g(2 * h) + 8 * g(h) - 8 * g(-h) + g(-2 * h)) / (12 * h)
