"""Backend dispatch of the Ops: JAX (numpyro, blackjax) and Numba (nutpie)."""
