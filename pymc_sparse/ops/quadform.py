r"""Matrix-vector products and quadratic forms on a lower-triangle pattern, as fused Ops.

Three Ops carry every ``Q @ x``, ``x' Q x`` and their derivatives in the package:

* :class:`SparseMatVec`: :math:`y = Qx`;
* :class:`SparseQuadForm`: :math:`(x^\top Q x,\ Qx)` in one pass over the stored values
  (the second output is the gradient in :math:`x` up to a factor 2, so a log-density and
  its gradient share the pass);
* :class:`SparsePairProduct`: the cotangent of the stored values of :math:`u^\top Q v`,
  :math:`e_k = u_i v_j + u_j v_i` off the diagonal and :math:`u_i v_i` on it.

Written as sums over the stored lower triangle, each is :math:`O(\mathrm{nnz})`
arithmetic with no intermediate gathers or scatters: the C backend runs the loops below
(``c_code``, vectors), NUMBA the same loops compiled by Numba
(:mod:`pymc_sparse.dispatch.numba`), JAX a gather and one scatter-add
(:mod:`pymc_sparse.dispatch.jax`).  The pattern enters as two integer inputs (the CSC
``indptr`` and row ``indices``, constants built by the wrappers) rather than as an Op
prop, so one compiled C module serves every pattern and the module cache key never holds
the index arrays.

Lengths are checked when the graph is built if they are static, and again by every
kernel at run time (``ValueError``), so a vector of the wrong length is never truncated.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply, Constant
from pytensor.link.c.op import COp

from pymc_sparse.linalg.pattern import SparsityPattern, lower_matvec
from pymc_sparse.ops._index import const_index

__all__ = [
    "SparseMatVec",
    "SparsePairProduct",
    "SparseQuadForm",
    "matvec",
    "pair_product",
    "quad_form",
]


def _static_length(v, axis: int = 0):
    """Length of ``v`` along ``axis`` if known when the graph is built."""
    n = v.type.shape[axis]
    if n is None and isinstance(v, Constant):
        n = v.data.shape[axis]
    return n


def _index_inputs(pattern: SparsityPattern):
    return const_index(pattern.indptr), const_index(pattern.indices)


def _check_lengths(what: str, indptr, indices, data=None, vectors=()):
    """Raise ``ValueError`` when a static length disagrees with the pattern."""
    n = None if not isinstance(indptr, Constant) else indptr.data.size - 1
    nnz = None if not isinstance(indices, Constant) else indices.data.size
    if data is not None and nnz is not None:
        m = _static_length(data)
        if m is not None and m != nnz:
            raise ValueError(
                f"{what}: the pattern stores {nnz} values but `data` has {m}; pass the "
                "values in the pattern's lower-triangle CSC order."
            )
    for name, v in vectors:
        m = _static_length(v)
        if n is not None and m is not None and m != n:
            raise ValueError(
                f"{what}: `{name}` has length {m} but the matrix is {n} x {n}; a vector of "
                "another length is never truncated or padded."
            )


def _float64(v, name):
    v = pt.as_tensor_variable(v)
    if v.type.dtype != "float64":
        if v.type.dtype.startswith("complex"):
            raise TypeError(f"`{name}` must be real, got {v.type.dtype}.")
        v = pt.cast(v, "float64")
    return v


def _runtime_check(what, indptr, indices, data, *vectors):
    n, nnz = indptr.size - 1, indices.size
    if data is not None and data.shape[0] != nnz:
        raise ValueError(f"{what}: the pattern stores {nnz} values but `data` has {data.shape[0]}.")
    for v in vectors:
        if v.shape[0] != n:
            raise ValueError(f"{what}: a vector of length {v.shape[0]} for a {n} x {n} matrix.")


def numpy_matvec(indptr, indices, data, x) -> np.ndarray:
    """``Q x`` from the stored lower triangle (NumPy/SciPy; ``x`` of shape (n,) or (n, k))."""
    _runtime_check("Q @ x", indptr, indices, data, x)
    return lower_matvec(indptr, indices, data, x)


def numpy_pair_product(indptr, indices, u, v) -> np.ndarray:
    """Per stored entry ``u_i v_j + u_j v_i`` (``u_i v_i`` on the diagonal), summed over columns."""
    _runtime_check("pair product", indptr, indices, None, u, v)
    rows = indices
    cols = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    off = rows != cols
    e = u[rows] * v[cols]
    e[off] += u[cols[off]] * v[rows[off]]
    return e.sum(axis=1) if e.ndim == 2 else e


# --------------------------------------------------------------------------- C kernels
# y += Q x over the stored lower triangle, one pass: each stored value acts on y_i and
# (off the diagonal) on y_j.  Shared by SparseMatVec and SparseQuadForm.
# y += Q x over the stored lower triangle; rows are sorted and unique in a column, so a
# diagonal entry can only come first (tested once per column, not per entry).  y[j] is
# final after column j (later columns add only below it): the quadratic form adds
# x_j y_j there, in the same pass (pymc_sparse.linalg.pattern.lower_matvec_into).
_C_MATVEC_LOOP = """\
    for (npy_intp j = 0; j < n; ++j) {
        const npy_float64 xj = PMS_AT(B, j);
        npy_float64 acc = 0.0;
        npy_intp k = PMS_AT(IP, j);
        const npy_intp k1 = PMS_AT(IP, j + 1);
        if (k < k1 && PMS_AT(IX, k) == j) {
            acc = PMS_AT(A, k) * xj;
            ++k;
        }
        for (; k < k1; ++k) {
            const npy_intp i = PMS_AT(IX, k);
            const npy_float64 v = PMS_AT(A, k);
            yp[i] += v * xj;
            acc += v * PMS_AT(B, i);
        }
        yp[j] += acc;
        COLUMN_DONE
    }
"""


def _unit_or_strided(loop: str) -> str:
    """Return the loop twice: plain indexing for unit strides (the usual case), else strided.

    With plain indexing the compiler needs no stride multiply per load.
    """
    unit = loop.replace("PMS_AT(", "PMS_AT1(")
    return (
        "    if (A_s == 1 && B_s == 1 && IP_s == 1 && IX_s == 1) {\n"
        + unit
        + "    } else {\n"
        + loop
        + "    }\n"
    )


_C_QUAD_LOOP = _unit_or_strided(_C_MATVEC_LOOP.replace("COLUMN_DONE", "tot += xj * yp[j];"))
_C_MATVEC_LOOP = _unit_or_strided(_C_MATVEC_LOOP.replace("COLUMN_DONE", ""))
_C_HEADER = """
/* Local data pointer and element stride of a 1-d input, read once: the loops then
   index plain pointers (no reload of the array struct after every store). */
#define PMS_DECL(role, arr, T) \
    const T* role##_p = (const T*)PyArray_DATA(arr); \
    const npy_intp role##_s = PyArray_STRIDES(arr)[0] / (npy_intp)sizeof(T);
#define PMS_AT(role, k) (role##_p[(k) * role##_s])
#define PMS_AT1(role, k) (role##_p[(k)])
"""

_C_CHECK = """
npy_intp n = PyArray_DIMS(%(indptr)s)[0] - 1;
npy_intp nnz = PyArray_DIMS(%(indices)s)[0];
if (PyArray_TYPE(%(indptr)s) != NPY_INT64 || PyArray_TYPE(%(indices)s) != NPY_INT64) {
    PyErr_SetString(PyExc_TypeError, "%(what)s: the pattern's index arrays must be int64.");
    %(fail)s
}
if (!PyArray_ISALIGNED(%(a)s) || !PyArray_ISALIGNED(%(b)s)) {
    PyErr_SetString(PyExc_ValueError, "%(what)s: unaligned input array.");
    %(fail)s
}
%(checks)s
PMS_DECL(A, %(a)s, npy_float64)
PMS_DECL(B, %(b)s, npy_float64)
PMS_DECL(IP, %(indptr)s, npy_int64)
PMS_DECL(IX, %(indices)s, npy_int64)
"""


def _c_len_check(var: str, expected: str, what: str, label: str, fail: str) -> str:
    return f"""
if (PyArray_DIMS({var})[0] != {expected}) {{
    PyErr_Format(PyExc_ValueError, "{what}: `{label}` has length %ld, expected %ld.",
                 (long)PyArray_DIMS({var})[0], (long){expected});
    {fail}
}}"""


def _c_alloc(out: str, ndim: int, dims: str, fail: str, zero: bool) -> str:
    init = "PyArray_ZEROS" if zero else "PyArray_EMPTY"
    clear = f"memset(PyArray_DATA({out}), 0, PyArray_NBYTES({out}));" if zero and ndim else ""
    shape_ok = f"PyArray_DIMS({out})[0] == {dims}" if ndim else "1"
    return f"""
{{
    npy_intp _dims[1] = {{{dims}}};
    if ({out} == NULL || !PyArray_ISCARRAY({out}) || !({shape_ok})) {{
        Py_XDECREF({out});
        {out} = (PyArrayObject*){init}({ndim}, _dims, NPY_FLOAT64, 0);
        if (!{out}) {{ {fail} }}
    }} else {{ {clear} }}
}}"""


class _PatternOp(COp):
    """Shared parts: no props (the pattern is an input), vector C code, Python fallback."""

    __props__ = ()
    _what = ""

    def c_support_code(self, **kwargs):
        return _C_HEADER

    def c_code_cache_version(self):
        return (6,)

    def _c_prologue(self, node, inputs, sub, data, vectors):
        names = dict(zip(("a", "b", "indptr", "indices"), inputs, strict=True))
        if any(v.type.ndim != 1 for v in node.inputs[:2]):
            raise NotImplementedError("C code for vectors only; matrices use perform")
        checks = ""
        if data:
            checks += _c_len_check(names["a"], "nnz", self._what, "data", sub["fail"])
        for key, label in vectors:
            checks += _c_len_check(names[key], "n", self._what, label, sub["fail"])
        # One block: the declarations below must not be crossed by the `fail` gotos
        # of other nodes' code.
        return "{\n" + _C_CHECK % dict(
            indptr=names["indptr"],
            indices=names["indices"],
            a=names["a"],
            b=names["b"],
            what=self._what,
            fail=sub["fail"],
            checks=checks,
        )

    def connection_pattern(self, node):
        return [[True] * len(node.outputs)] * 2 + [[False] * len(node.outputs)] * 2


class SparseMatVec(_PatternOp):
    r"""``y = Q x`` for the symmetric ``Q`` stored as a lower triangle; ``x`` (n,) or (n, k).

    Inputs ``(data, x, indptr, indices)``.  Derivatives:
    :math:`\bar x = Q\bar y` and :math:`\bar q_k = \bar y_i x_j + \bar y_j x_i`
    (:class:`SparsePairProduct`).
    """

    _what = "Q @ x"

    def make_node(self, data, x, indptr, indices):
        data, x = _float64(data, "data"), _float64(x, "x")
        indptr, indices = pt.as_tensor_variable(indptr), pt.as_tensor_variable(indices)
        if data.type.ndim != 1 or x.type.ndim not in (1, 2):
            raise TypeError(f"Q @ x needs a values vector and a vector or matrix x, got {x.type}.")
        _check_lengths("Q @ x", indptr, indices, data, [("x", x)])
        return Apply(self, [data, x, indptr, indices], [x.type()])

    def perform(self, node, inputs, outputs):
        data, x, indptr, indices = inputs
        outputs[0][0] = np.asarray(numpy_matvec(indptr, indices, data, x), dtype=np.float64)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1]]

    def c_code(self, node, name, inputs, outputs, sub):
        (y,) = outputs
        pro = self._c_prologue(node, inputs, sub, True, [("b", "x")])
        return (
            pro
            + _c_alloc(y, 1, "n", sub["fail"], zero=True)
            + f"""
{{
    npy_float64* yp = (npy_float64*)PyArray_DATA({y});
{_C_MATVEC_LOOP}}}
}}"""
        )

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        data, x, indptr, indices = inputs
        (ybar,) = output_grads
        return [
            SparsePairProduct()(ybar, x, indptr, indices),
            SparseMatVec()(data, ybar, indptr, indices),
            DisconnectedType()(),
            DisconnectedType()(),
        ]


class SparseQuadForm(_PatternOp):
    r"""``(x' Q x, Q x)`` in one pass; for ``x`` of shape (n, k), one form per column.

    Inputs ``(data, x, indptr, indices)``.  With :math:`y = Qx` and cotangents
    :math:`(\bar s, \bar y)`: :math:`\bar x = 2\bar s\,y + Q\bar y` and
    :math:`\bar q_k = \bar s\,w_k x_i x_j + (\bar y_i x_j + \bar y_j x_i)`, :math:`w_k`
    = 1 on the diagonal and 2 off it.  A log-density needs only :math:`\bar s`, so its
    gradient in ``x`` is ``2 * s_bar * y``: no second pass.
    """

    _what = "quad_form"

    def make_node(self, data, x, indptr, indices):
        data, x = _float64(data, "data"), _float64(x, "x")
        indptr, indices = pt.as_tensor_variable(indptr), pt.as_tensor_variable(indices)
        if data.type.ndim != 1 or x.type.ndim not in (1, 2):
            raise TypeError(f"quad_form needs a values vector and a vector or matrix: {x.type}.")
        _check_lengths("quad_form", indptr, indices, data, [("x", x)])
        s = pt.scalar(dtype="float64") if x.type.ndim == 1 else pt.vector(dtype="float64")
        return Apply(self, [data, x, indptr, indices], [s, x.type()])

    def perform(self, node, inputs, outputs):
        data, x, indptr, indices = inputs
        y = numpy_matvec(indptr, indices, data, x)
        outputs[0][0] = np.asarray(np.sum(x * y, axis=0), dtype=np.float64)
        outputs[1][0] = np.asarray(y, dtype=np.float64)

    def infer_shape(self, fgraph, node, shapes):
        xs = shapes[1]
        return [() if len(xs) == 1 else (xs[1],), xs]

    def c_code(self, node, name, inputs, outputs, sub):
        s, y = outputs
        pro = self._c_prologue(node, inputs, sub, True, [("b", "x")])
        return (
            pro
            + _c_alloc(y, 1, "n", sub["fail"], zero=True)
            + _c_alloc(s, 0, "0", sub["fail"], zero=False)
            + f"""
{{
    npy_float64* yp = (npy_float64*)PyArray_DATA({y});
    npy_float64 tot = 0.0;
{_C_QUAD_LOOP}    *(npy_float64*)PyArray_DATA({s}) = tot;
}}
}}"""
        )

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        data, x, indptr, indices = inputs
        _, y = outputs
        sbar, ybar = output_grads
        gx, gdata = [], []
        if not isinstance(sbar.type, DisconnectedType):
            two = pt.constant(2.0, dtype="float64")
            gx.append(two * (sbar * y if x.type.ndim == 1 else y * sbar[None, :]))
            gdata.append(SparsePairProduct()(x, x * sbar, indptr, indices))
        if not isinstance(ybar.type, DisconnectedType):
            gx.append(SparseMatVec()(data, ybar, indptr, indices))
            gdata.append(SparsePairProduct()(ybar, x, indptr, indices))
        if not gx:
            return [DisconnectedType()() for _ in inputs]
        return [pt.add(*gdata), pt.add(*gx), DisconnectedType()(), DisconnectedType()()]


class SparsePairProduct(_PatternOp):
    r"""Per stored entry ``(i, j)``: :math:`u_i v_j + u_j v_i` (:math:`u_i v_i` if ``i = j``).

    This is :math:`\partial (u^\top Q v)/\partial q_k`; for matrices ``u, v`` of shape
    (n, k) the columns are summed.  Inputs ``(u, v, indptr, indices)``; derivatives
    :math:`\bar u = E v`, :math:`\bar v = E u` with :math:`E` the symmetric matrix whose
    stored values are the cotangent :math:`\bar e`.
    """

    _what = "pair product"

    def make_node(self, u, v, indptr, indices):
        u, v = _float64(u, "u"), _float64(v, "v")
        indptr, indices = pt.as_tensor_variable(indptr), pt.as_tensor_variable(indices)
        if u.type.ndim != v.type.ndim or u.type.ndim not in (1, 2):
            raise TypeError(f"pair product needs two vectors or matrices, got {u.type}, {v.type}.")
        _check_lengths("pair product", indptr, indices, None, [("u", u), ("v", v)])
        return Apply(self, [u, v, indptr, indices], [pt.vector(dtype="float64")])

    def perform(self, node, inputs, outputs):
        u, v, indptr, indices = inputs
        outputs[0][0] = np.asarray(numpy_pair_product(indptr, indices, u, v), dtype=np.float64)

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[3][0],)]

    def c_code(self, node, name, inputs, outputs, sub):
        (e,) = outputs
        pro = self._c_prologue(node, inputs, sub, False, [("a", "u"), ("b", "v")])
        return (
            pro
            + _c_alloc(e, 1, "nnz", sub["fail"], zero=False)
            + f"""
{{
    npy_float64* ep = (npy_float64*)PyArray_DATA({e});
    for (npy_intp j = 0; j < n; ++j) {{
        const npy_float64 uj = PMS_AT(A, j), vj = PMS_AT(B, j);
        const npy_intp k1 = PMS_AT(IP, j + 1);
        for (npy_intp k = PMS_AT(IP, j); k < k1; ++k) {{
            const npy_intp i = PMS_AT(IX, k);
            ep[k] = (i == j) ? uj * vj : PMS_AT(A, i) * vj + uj * PMS_AT(B, i);
        }}
    }}
}}
}}"""
        )

    def L_op(self, inputs, outputs, output_grads):  # `pullback` in pytensor 3
        u, v, indptr, indices = inputs
        (ebar,) = output_grads
        return [
            SparseMatVec()(ebar, v, indptr, indices),
            SparseMatVec()(ebar, u, indptr, indices),
            DisconnectedType()(),
            DisconnectedType()(),
        ]


# ----------------------------------------------------------------------------- wrappers
def matvec(pattern: SparsityPattern, data, x):
    """Symbolic ``Q x`` (``x`` of shape (n,) or (n, k)), ``O(nnz)`` and differentiable."""
    return SparseMatVec()(data, x, *_index_inputs(pattern))


def quad_form(pattern: SparsityPattern, data, x):
    """Symbolic ``x' Q x`` (one per column for ``x`` of shape (n, k))."""
    return SparseQuadForm()(data, x, *_index_inputs(pattern))[0]


def pair_product(pattern: SparsityPattern, u, v):
    r"""Symbolic :math:`\partial(u^\top Q v)/\partial q` on the stored values."""
    return SparsePairProduct()(u, v, *_index_inputs(pattern))
