"""``pm.sample``-like InferenceData from unconstrained points, shared by the samplers."""

from __future__ import annotations

import arviz as az
import numpy as np

__all__ = ["posterior_at_points"]


def posterior_at_points(model, f, xs, **from_dict):
    """Return InferenceData of constrained values and Deterministics at ``xs``.

    Parameters
    ----------
    model : pm.Model
    f : object
        The raveller of the sampler (``f.unravel(x)`` gives a point dict).
    xs : ndarray, shape (chain, draw, d)
        Unconstrained points; repeated points (rejections, grid resamples) are evaluated
        once.
    **from_dict
        Further groups for :func:`arviz.from_dict` (``sample_stats`` ...).
    """
    # PyMC names transformed values "x_log__": keep the constrained ones.
    outs = [v for v in model.unobserved_value_vars if not v.name.endswith("__")]
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=False)
    chains, draws, _ = xs.shape
    values = {v.name: [] for v in outs}
    cache = {}
    for c in range(chains):
        for d in range(draws):
            key = xs[c, d].tobytes()
            if key not in cache:
                cache[key] = fn(**f.unravel(xs[c, d]))
            for v, r in zip(outs, cache[key], strict=True):
                values[v.name].append(np.asarray(r))
    posterior = {
        nm: np.stack(vals).reshape((chains, draws, *np.shape(vals[0])))
        for nm, vals in values.items()
    }
    dims = {nm: list(d) for nm, d in model.named_vars_to_dims.items() if nm in posterior}
    coords = {nm: np.asarray(v) for nm, v in model.coords.items() if v is not None}
    return az.from_dict(posterior=posterior, coords=coords, dims=dims, **from_dict)
