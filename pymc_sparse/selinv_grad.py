"""Reverse-mode derivative of the selected inverse (placeholder, see issue 7)."""

from __future__ import annotations

import numpy as np

__all__ = ["selected_inverse_vjp"]


def selected_inverse_vjp(factor, sbar: np.ndarray) -> np.ndarray:
    """Cotangent of Q's stored values from a cotangent of the selected inverse."""
    raise NotImplementedError("The gradient of the selected inverse is not implemented yet.")
