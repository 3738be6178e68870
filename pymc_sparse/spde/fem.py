r"""Finite-element matrices of piecewise-linear (P1) functions on a triangle mesh.

For the hat functions :math:`\psi_i` of a :class:`~pymc_sparse.spde.mesh.TriangleMesh`,

.. math:: \tilde C_{ij} = \int \psi_i \psi_j, \qquad
          C = \operatorname{diag}\Big(\sum_j \tilde C_{ij}\Big) = \operatorname{diag}
          \Big(\int \psi_i\Big), \qquad G_{ij} = \int \nabla\psi_i \cdot \nabla\psi_j .

:math:`C_{ii}` is a third of the area of the triangles around node :math:`i` (lumped
mass: it keeps :math:`C^{-1}` diagonal so the SPDE precision stays sparse [1]_);
:math:`G` is the stiffness matrix (for one triangle,
:math:`G^{(T)}_{ij} = \frac{1}{2}\cot\theta_k` with the sign of a discrete Laplacian,
:math:`\theta_k` the angle opposite edge :math:`ij`).  Both are assembled with
scikit-fem (BSD-3) [2]_.  :math:`G` has the constants in its null space (natural
Neumann boundary).

References
----------
.. [1] Lindgren, F., Rue, H. and Lindström, J. (2011). An explicit link between Gaussian
   fields and Gaussian Markov random fields: the SPDE approach. *J. R. Stat. Soc. B*
   73(4), 423-498, section 2.3 and appendix C.
.. [2] Gustafsson, T. and McBain, G. D. (2020). scikit-fem: A Python package for finite
   element assembly. *Journal of Open Source Software* 5(52), 2369.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pymc_sparse.spde.mesh import TriangleMesh

__all__ = ["FEMatrices", "fem_matrices"]


@dataclass(frozen=True)
class FEMatrices:
    """Lumped mass ``c`` (the diagonal of :math:`C`, length ``n``) and stiffness ``G`` (CSC)."""

    c: np.ndarray
    G: sp.csc_matrix

    @property
    def n(self) -> int:
        """Number of nodes."""
        return int(self.c.size)

    @property
    def C(self) -> sp.csc_matrix:
        """The lumped mass as a diagonal sparse matrix."""
        return sp.diags(self.c, format="csc")


def fem_matrices(mesh: TriangleMesh) -> FEMatrices:
    r"""Assemble the lumped mass :math:`C` and the stiffness :math:`G` of a P1 mesh.

    Parameters
    ----------
    mesh : TriangleMesh

    Returns
    -------
    FEMatrices
        ``c[i]`` :math:`= \int\psi_i` (a third of the area of the triangles at node
        :math:`i`), ``G`` symmetric positive semi-definite with ``G @ 1 = 0``.
    """
    if not isinstance(mesh, TriangleMesh):
        raise TypeError(f"`mesh` must be a TriangleMesh, got {type(mesh).__name__}.")
    from skfem import Basis, BilinearForm, ElementTriP1, MeshTri, asm
    from skfem.helpers import dot, grad

    @BilinearForm
    def mass(u, v, w):
        return u * v

    @BilinearForm
    def laplace(u, v, w):
        return dot(grad(u), grad(v))

    m = MeshTri(np.ascontiguousarray(mesh.nodes.T), np.ascontiguousarray(mesh.triangles.T))
    basis = Basis(m, ElementTriP1())
    # P1 degrees of freedom are the mesh nodes, in node order.
    M = asm(mass, basis).tocsr()
    G = asm(laplace, basis).tocsc()
    G = (0.5 * (G + G.T)).tocsc()  # exact symmetry (the assembly is symmetric to rounding)
    G.sum_duplicates()
    G.sort_indices()
    c = np.asarray(M.sum(axis=1)).ravel()
    return FEMatrices(c=c, G=G)
