r"""The per-component sum-to-zero map of the ICAR, as one fused Op per direction.

The free coordinates :math:`z \in \mathbb{R}^{n_f}` of an intrinsic field are carried by
the nodes ``free``; each *proper* component :math:`c` (two or more nodes, size
:math:`m_c`) also has a pivot node :math:`p_c` that is not free.  With
:math:`s_c = \sum_{j \in c} z_j` the sum of the component's free values,

.. math::

    x_{\text{free}_j} = z_j - \frac{s_c}{\sqrt{m_c} + m_c}, \qquad
    x_{p_c} = -\frac{s_c}{\sqrt{m_c}}

(PyMC's ``ZeroSumTransform``, a Householder reflection, component by component); free
nodes outside any proper component (``comp = -1``: the singletons of
``singletons="iid"``) are copied, every other node is 0.  This *backward* map
:math:`B` is an isometry onto :math:`\{x : \sum_{i \in c} x_i = 0\ \forall c\}`; its
inverse on that subspace, the *forward* map :math:`F`, is

.. math:: z_j = x_{\text{free}_j} - \frac{x_{p_c}\sqrt{m_c}}{\sqrt{m_c} + m_c}.

Both are linear, so their derivatives are their adjoints: :class:`ComponentZeroSum` has
four kinds, ``"backward"`` (:math:`B`), ``"backward_adjoint"`` (:math:`B^\top`),
``"forward"`` (:math:`F`) and ``"forward_adjoint"`` (:math:`F^\top`), and the
``L_op`` of each kind is its partner.  Each is one :math:`O(n)` pass with an
:math:`O(k)` scratch vector of component sums, in C (``c_code``), in Numba
(:mod:`pymc_sparse.dispatch.numba`) and in JAX (:mod:`pymc_sparse.dispatch.jax`).  Before,
the map was a graph of gathers and scatters along the second axis of a ``(batch, n)``
matrix, which PyTensor's C backend runs in Python (``np.add.at``): 95% of an ICAR
log-density and gradient at n = 1,921 (``docs/performance/small_n.md``).

The layout enters as constant inputs (``n``, ``free``, ``comp``, ``pivots``, ``sizes``),
as the pattern does for :mod:`pymc_sparse.ops.quadform`, so one compiled C module per
kind serves every graph.  Values are vectors or ``(batch, length)`` matrices (one map per
row); :func:`zero_sum_backward` and :func:`zero_sum_forward` reshape more leading
dimensions to one.

References
----------
.. [1] Rue, H. and Held, L. (2005). *Gaussian Markov Random Fields*, 2.3.3 and 3.2.
.. [2] PyMC ``pymc.distributions.transforms.ZeroSumTransform``.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply, Constant
from pytensor.link.c.op import COp

from pymc_sparse.ops._index import const_index

__all__ = ["ComponentZeroSum", "numpy_zero_sum", "zero_sum_backward", "zero_sum_forward"]

KINDS = ("backward", "backward_adjoint", "forward", "forward_adjoint")
_ADJOINT = {
    "backward": "backward_adjoint",
    "backward_adjoint": "backward",
    "forward": "forward_adjoint",
    "forward_adjoint": "forward",
}
# Kinds that take the n_f free coordinates (the others take the n nodes).
_TAKES_FREE = ("backward", "forward_adjoint")


def check_layout(n: int, free, comp, pivots, sizes) -> None:
    """Raise ``ValueError`` unless the layout arrays describe a valid map."""
    free, comp, pivots = (np.asarray(a) for a in (free, comp, pivots))
    sizes = np.asarray(sizes)
    kp = pivots.size
    if free.ndim != 1 or comp.shape != free.shape or pivots.ndim != 1 or sizes.shape != (kp,):
        raise ValueError(
            "zero-sum layout: `free` and `comp` must be vectors of one length and `sizes` "
            f"one value per pivot; got shapes {free.shape}, {comp.shape}, {pivots.shape}, "
            f"{sizes.shape}."
        )
    nodes = np.concatenate([free, pivots])
    if nodes.size and (nodes.min() < 0 or nodes.max() >= n or np.unique(nodes).size != nodes.size):
        raise ValueError(f"zero-sum layout: free and pivot nodes must be distinct, in [0, {n}).")
    if comp.size and (comp.min() < -1 or comp.max() >= kp):
        raise ValueError(f"zero-sum layout: `comp` must lie in [-1, {kp}).")
    if np.any(sizes < 2):
        raise ValueError("zero-sum layout: a proper component has at least two nodes.")


def numpy_zero_sum(kind: str, v, n: int, free, comp, pivots, sizes) -> np.ndarray:
    """The map of ``kind`` in NumPy (``v`` of shape (length,) or (batch, length))."""
    v = np.asarray(v, dtype=np.float64)
    vec = v.ndim == 1
    v = np.atleast_2d(v)
    kp, nf = pivots.size, free.size
    length = nf if kind in _TAKES_FREE else n
    if v.shape[-1] != length:
        raise ValueError(f"zero-sum map ({kind}): a value of length {v.shape[-1]}, not {length}.")
    proper = comp >= 0
    cp = comp[proper]
    r = np.sqrt(sizes)

    def component_sums(a):  # (B, nf) -> (B, kp), sums over each component's free values
        t = np.zeros((a.shape[0], kp))
        for b in range(a.shape[0]):
            t[b] = np.bincount(cp, weights=a[b, proper], minlength=kp)
        return t

    def spread(base, per_comp):  # base (B, nf) plus each free value's component term
        out = base.copy()
        out[:, proper] += per_comp[:, cp]
        return out

    if kind == "backward":
        t = component_sums(v)
        out = np.zeros((v.shape[0], n))
        out[:, free] = spread(v, -(t / (r + sizes)))
        out[:, pivots] = -t / r
    elif kind == "backward_adjoint":
        t = component_sums(v[:, free])
        out = spread(v[:, free], -t / (r + sizes) - v[:, pivots] / r)
    elif kind == "forward":
        out = spread(v[:, free], (-v[:, pivots] * r) / (r + sizes))
    else:
        t = component_sums(v)
        out = np.zeros((v.shape[0], n))
        out[:, free] = v
        out[:, pivots] = -(t / (r + sizes)) * r
    return out[0] if vec else out


# ----------------------------------------------------------------------------- C code
_C_SUPPORT = r"""
#ifndef PMS_ZEROSUM_DEFINED
#define PMS_ZEROSUM_DEFINED
/* The layout of the map (contiguous arrays): node of each free coordinate (fr), its
   proper component or -1 (cm), one pivot node (pv) and one size (sz) per proper
   component. */
typedef struct {
    npy_intp n, nf, kp;
    const npy_int64 *fr, *cm, *pv;
    const npy_float64 *sz;
} pms_zs_layout;

/* t[c] = sum of the free values of proper component c, in order: v[j] (gather = 0) or
   x at the free nodes, v[fr[j]] (gather = 1).  Consecutive free values of one component
   are summed in four registers: a sum through t[c] in memory waits on a store at each
   step, a single register on the previous add. */
#define PMS_ZS_SUM_LOOP(READ) \
    for (j = 0; j < nf;) { \
        const npy_intp cj = (npy_intp)cm[j]; \
        if (cj != cur) { \
            if (cur >= 0) t[cur] += (a0 + a1) + (a2 + a3); \
            cur = cj; \
            a0 = a1 = a2 = a3 = 0.0; \
        } \
        if (j + 3 < nf && cm[j + 3] == cj && cm[j + 1] == cj && cm[j + 2] == cj) { \
            a0 += READ(j); a1 += READ(j + 1); a2 += READ(j + 2); a3 += READ(j + 3); \
            j += 4; \
        } else { \
            a0 += READ(j); \
            j += 1; \
        } \
    }
#define PMS_ZS_DIRECT(k) v[(k)]
#define PMS_ZS_GATHER(k) v[fr[(k)]]
static void pms_zs_sums(const pms_zs_layout* L, const npy_float64* v, int gather,
                        npy_float64* t)
{
    const npy_intp nf = L->nf;
    const npy_int64* cm = L->cm;
    const npy_int64* fr = L->fr;
    npy_intp j, c, cur = -1;
    npy_float64 a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    for (c = 0; c < L->kp; ++c) t[c] = 0.0;
    if (gather) {
        PMS_ZS_SUM_LOOP(PMS_ZS_GATHER)
    } else {
        PMS_ZS_SUM_LOOP(PMS_ZS_DIRECT)
    }
    if (cur >= 0) t[cur] += (a0 + a1) + (a2 + a3);
}

/* One component's terms, with s the sum of its free values (kinds 0, 1, 3), vp the
   value at its pivot (kinds 1, 2) and m its size: returns the shift added to its free
   values and, for kinds 0 and 3, sets *piv to the pivot's output. */
static npy_float64 pms_zs_terms(int kind, npy_float64 s, npy_float64 m, npy_float64 vp,
                                npy_float64* piv)
{
    const npy_float64 r = sqrt(m);
    switch (kind) {
    case 0: *piv = -s / r; return -(s / (r + m));
    case 1: return -s / (r + m) - vp / r;
    case 2: return (-vp * r) / (r + m);
    default: *piv = -(s / (r + m)) * r; return 0.0;
    }
}

/* One row v -> o; t is a scratch vector of kp values.
   kind 0: backward, 1: backward adjoint, 2: forward, 3: forward adjoint. */
static void pms_zs_row(int kind, const pms_zs_layout* L, const npy_float64* v, npy_float64* o,
                       npy_float64* t)
{
    const npy_intp nf = L->nf, kp = L->kp;
    const npy_int64* fr = L->fr;
    const npy_int64* cm = L->cm;
    npy_intp j, c;
    if ((kind == 0 || kind == 3) && nf + kp < L->n) {
        for (j = 0; j < L->n; ++j) o[j] = 0.0;  /* nodes fixed at 0 */
    }
    if (kind != 2) pms_zs_sums(L, v, kind == 1, t);
    for (c = 0; c < kp; ++c) {
        const npy_intp p = (npy_intp)L->pv[c];
        npy_float64 piv = 0.0;
        /* v holds the n nodes (and so the pivot) only for kinds 1 and 2 */
        t[c] = pms_zs_terms(kind, t[c], L->sz[c], (kind == 1 || kind == 2) ? v[p] : 0.0, &piv);
        if (kind == 0 || kind == 3) o[p] = piv;
    }
    if (kind == 0) {
        for (j = 0; j < nf; ++j) {
            const npy_intp cj = (npy_intp)cm[j];
            o[fr[j]] = (cj >= 0) ? v[j] + t[cj] : v[j];
        }
    } else if (kind == 3) {
        for (j = 0; j < nf; ++j) o[fr[j]] = v[j];
    } else {
        for (j = 0; j < nf; ++j) {
            const npy_intp cj = (npy_intp)cm[j];
            const npy_float64 vj = v[fr[j]];
            o[j] = (cj >= 0) ? vj + t[cj] : vj;
        }
    }
}

/* The layout of a connected graph: one component, free nodes 0..n-2, pivot n-1.  The
   map is then a sum and a shifted copy of contiguous memory (they vectorise), with no
   gathers through fr/cm (see one_component). */
static void pms_zs_row_one(int kind, const pms_zs_layout* L, const npy_float64* v,
                           npy_float64* o)
{
    const npy_intp nf = L->nf;
    npy_float64 s = 0.0, a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, shift, piv = 0.0;
    npy_intp j = 0;
    if (kind != 2) {
        for (; j + 3 < nf; j += 4) {
            a0 += v[j]; a1 += v[j + 1]; a2 += v[j + 2]; a3 += v[j + 3];
        }
        for (; j < nf; ++j) a0 += v[j];
        s = (a0 + a1) + (a2 + a3);
    }
    shift = pms_zs_terms(kind, s, L->sz[0], (kind == 1 || kind == 2) ? v[nf] : 0.0, &piv);
    if (kind == 0 || kind == 3) o[nf] = piv;
    for (j = 0; j < nf; ++j) o[j] = v[j] + shift;
}
#endif
"""


def one_component(node) -> bool:
    """Whether a node's layout constants are those of a connected graph.

    One proper component, pivot ``n - 1`` and free nodes ``0..n-2`` (``_layout`` of
    :mod:`pymc_sparse.distributions.icar` picks the last node as pivot): the C and Numba
    kernels then run contiguous loops instead of gathers (a third of an ICAR log-density
    and gradient at n = 10^4, docs/performance/small_n.md).
    """
    consts = node.inputs[1:]
    if not all(isinstance(c, Constant) for c in consts):
        return False
    n, free, comp, pivots, _ = (np.asarray(c.data) for c in consts)
    nf = free.shape[0]
    return (
        pivots.shape == (1,)
        and int(pivots[0]) == nf
        and nf + 1 == int(n)
        and np.array_equal(free, np.arange(nf))
        and not np.any(comp)
    )


# Inputs made C-contiguous (a new reference each; an incref if they already are).
_C_CONTIGUOUS = ("v", "fr", "cm", "pv", "sz")


class ComponentZeroSum(COp):
    r"""One of the four linear maps of the per-component zero-sum isometry (module docstring).

    Inputs ``(value, n, free, comp, pivots, sizes)``: ``value`` of shape (length,) or
    (batch, length), ``n`` the number of nodes (int64 scalar), ``free``/``comp``
    (int64, one per free coordinate), ``pivots`` (int64) and ``sizes`` (float64), one
    per proper component.  ``length`` is :math:`n_f` for ``"backward"`` and
    ``"forward_adjoint"``, :math:`n` for the other two; the output has the other length.
    The gradient of each kind is its adjoint kind applied to the output's cotangent.
    """

    __props__ = ("kind",)

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")
        self.kind = kind

    def make_node(self, value, n, free, comp, pivots, sizes):
        value = pt.as_tensor_variable(value)
        if value.type.dtype != "float64":
            if not value.type.dtype.startswith(("float", "int", "uint")):
                raise TypeError(f"zero-sum map: `value` must be real, got {value.type.dtype}.")
            value = pt.cast(value, "float64")
        if value.type.ndim not in (1, 2):
            raise TypeError(
                f"zero-sum map: `value` must be a vector or a (batch, length) matrix, got "
                f"{value.type}; use zero_sum_backward/zero_sum_forward for more dimensions."
            )
        n = pt.cast(pt.as_tensor_variable(n), "int64")
        free, comp, pivots = (
            pt.cast(pt.as_tensor_variable(a), "int64") for a in (free, comp, pivots)
        )
        sizes = pt.cast(pt.as_tensor_variable(sizes), "float64")
        if n.type.ndim != 0 or any(a.type.ndim != 1 for a in (free, comp, pivots, sizes)):
            raise TypeError("zero-sum map: `n` must be a scalar and the layout arrays vectors.")
        inputs = [value, n, free, comp, pivots, sizes]
        static = [a.data if isinstance(a, Constant) else None for a in inputs[1:]]
        n_out = None
        if all(s is not None for s in static):
            check_layout(int(static[0]), *static[1:])
            in_len, out_len = int(static[1].size), int(static[0])
            if self.kind not in _TAKES_FREE:
                in_len, out_len = out_len, in_len
            got = value.type.shape[-1]
            if got is not None and got != in_len:
                raise ValueError(
                    f"zero-sum map ({self.kind}): `value` has length {got}, expected {in_len}."
                )
            n_out = out_len
        out = pt.tensor(dtype="float64", shape=(*value.type.shape[:-1], n_out))
        return Apply(self, inputs, [out])

    def perform(self, node, inputs, outputs):
        value, n, free, comp, pivots, sizes = inputs
        outputs[0][0] = numpy_zero_sum(self.kind, value, int(n), free, comp, pivots, sizes)

    def infer_shape(self, fgraph, node, shapes):
        n = node.inputs[1]
        out_len = n if self.kind in _TAKES_FREE else shapes[2][0]
        return [(*shapes[0][:-1], out_len)]

    def connection_pattern(self, node):
        return [[True]] + [[False]] * 5

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        (gbar,) = output_grads
        adj = ComponentZeroSum(_ADJOINT[self.kind])(gbar, *inputs[1:])
        return [adj] + [DisconnectedType()() for _ in inputs[1:]]

    def R_op(self, inputs, eval_points):
        if eval_points[0] is None:
            return [None]
        return [self(eval_points[0], *inputs[1:])]

    def c_support_code(self, **kwargs):
        return _C_SUPPORT

    def c_headers(self, **kwargs):
        return ["<math.h>"]

    def c_code_cache_version(self):
        return (6,)

    def c_code(self, node, name, inputs, outputs, sub):
        v, n, fr, cm, pv, sz = inputs
        (o,) = outputs
        fail = sub["fail"]
        kind = KINDS.index(self.kind)
        in_len, out_len = ("L.nf", "L.n") if self.kind in _TAKES_FREE else ("L.n", "L.nf")
        nd = node.inputs[0].type.ndim
        same_last = f"|| PyArray_DIMS({o})[1] != dims[1]" if nd == 2 else ""
        decl = "\n".join(f"PyArrayObject* c_{k} = NULL;" for k in _C_CONTIGUOUS)
        get = "\n".join(
            f"c_{k} = PyArray_GETCONTIGUOUS({dict(zip(_C_CONTIGUOUS, (v, fr, cm, pv, sz)))[k]});"
            for k in _C_CONTIGUOUS
        )
        release = " ".join(f"Py_XDECREF(c_{k});" for k in _C_CONTIGUOUS)
        row = (
            f"pms_zs_row_one({kind}, &L, vp + b * len, op + b * {out_len});"
            if one_component(node)
            else f"pms_zs_row({kind}, &L, vp + b * len, op + b * {out_len}, t);"
        )
        return f"""
{{
if (PyArray_TYPE({fr}) != NPY_INT64 || PyArray_TYPE({cm}) != NPY_INT64
        || PyArray_TYPE({pv}) != NPY_INT64 || PyArray_TYPE({n}) != NPY_INT64) {{
    PyErr_SetString(PyExc_TypeError, "zero-sum map: the layout's index arrays must be int64.");
    {fail}
}}
pms_zs_layout L;
L.n = (npy_intp)(*(npy_int64*)PyArray_DATA({n}));
L.nf = PyArray_DIMS({fr})[0];
L.kp = PyArray_DIMS({pv})[0];
if (PyArray_DIMS({cm})[0] != L.nf || PyArray_DIMS({sz})[0] != L.kp || L.nf + L.kp > L.n) {{
    PyErr_SetString(PyExc_ValueError, "zero-sum map: inconsistent layout arrays.");
    {fail}
}}
const npy_intp rows = {"PyArray_DIMS(" + v + ")[0]" if nd == 2 else "1"};
const npy_intp len = PyArray_DIMS({v})[{nd - 1}];
if (len != {in_len}) {{
    PyErr_Format(PyExc_ValueError, "zero-sum map ({self.kind}): a value of length %ld, "
                 "expected %ld.", (long)len, (long){in_len});
    {fail}
}}
npy_intp dims[2] = {{{"rows, " + out_len if nd == 2 else out_len}}};
if ({o} == NULL || !PyArray_ISCARRAY({o}) || PyArray_NDIM({o}) != {nd}
        || PyArray_DIMS({o})[0] != dims[0] {same_last}) {{
    Py_XDECREF({o});
    {o} = (PyArrayObject*)PyArray_EMPTY({nd}, dims, NPY_FLOAT64, 0);
    if (!{o}) {{ {fail} }}
}}
{decl}
npy_float64* t = NULL;
{get}
if (c_v && c_fr && c_cm && c_pv && c_sz) {{
    t = (npy_float64*)malloc((L.kp > 0 ? L.kp : 1) * sizeof(npy_float64));
}}
if (!t) {{
    {release}
    if (!PyErr_Occurred()) PyErr_NoMemory();
    {fail}
}}
L.fr = (const npy_int64*)PyArray_DATA(c_fr);
L.cm = (const npy_int64*)PyArray_DATA(c_cm);
L.pv = (const npy_int64*)PyArray_DATA(c_pv);
L.sz = (const npy_float64*)PyArray_DATA(c_sz);
const npy_float64* vp = (const npy_float64*)PyArray_DATA(c_v);
npy_float64* op = (npy_float64*)PyArray_DATA({o});
for (npy_intp b = 0; b < rows; ++b) {{
    {row}
}}
free(t);
{release}
}}
"""


# ----------------------------------------------------------------------------- wrappers
def _layout_inputs(n, free, comp, pivots, sizes):
    return (
        pt.constant(np.int64(n)),
        const_index(free),
        const_index(comp),
        const_index(pivots),
        pt.constant(np.asarray(sizes, dtype=np.float64)),
    )


def _apply(kind, value, layout):
    value = pt.as_tensor_variable(value)
    if value.type.ndim == 0:
        raise TypeError("zero-sum map: `value` must have at least one dimension.")
    op = ComponentZeroSum(kind)
    args = _layout_inputs(*layout)
    if value.type.ndim <= 2:
        return op(value, *args)
    # More leading dimensions: one map per row of the (batch, length) reshape.
    flat = op(value.reshape((-1, value.shape[-1])), *args)
    lead = [s if s is not None else value.shape[i] for i, s in enumerate(value.type.shape[:-1])]
    last = flat.type.shape[-1] if flat.type.shape[-1] is not None else flat.shape[-1]
    return flat.reshape((*lead, last), ndim=value.type.ndim)


def zero_sum_backward(z, n: int, free, comp, pivots, sizes):
    r"""Map free coordinates ``(..., n_f)`` to the zero-sum vector ``(..., n)`` (:math:`B z`).

    ``free``: node of each free coordinate; ``comp``: its proper component (0 .. k-1) or
    -1 (copied, e.g. a singleton); ``pivots``/``sizes``: pivot node and size of each
    proper component.  One fused pass per row; differentiable (:math:`B^\top`).
    """
    return _apply("backward", z, (n, free, comp, pivots, sizes))


def zero_sum_forward(x, n: int, free, comp, pivots, sizes):
    r"""Map a zero-sum vector ``(..., n)`` to its free coordinates ``(..., n_f)`` (:math:`F x`).

    The inverse of :func:`zero_sum_backward` on the zero-sum subspace (same layout).
    """
    return _apply("forward", x, (n, free, comp, pivots, sizes))
