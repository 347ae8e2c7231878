"""Derivative rules of numpy.linalg, written once for both AD engines.

The primal values come from numpy.linalg itself (LAPACK, through NumPy's own lapack_lite or
OpenBLAS), so they are NumPy's bit for bit. Each factorization has one JVP rule, given to the
engines as :func:`gradtest._primitives.linearized` (forward applies it to each tangent
direction, reverse records it and sweeps its transpose); its coefficients (an inverse, a factor,
a matrix of eigenvalue gaps) are computed by a ``jvp_of`` function from the inputs and outputs,
with NumPy calls the engines support, so that reverse order 2 can recompute them on the recorded
values and differentiate them (Hessian-vector products). The other functions are compositions
of those.

Primitives and their textbook rules (``T`` is the transpose of the last two axes):

* ``solve(A, B)``: ``dX = A^-1 (dB - dA X)``; ``inv(A) = solve(A, I)``.
* ``slogdet(A)``: ``d logabsdet = sum(A^-T * dA)`` (the sign is constant); ``det = sign * exp``
  of it in value, ``d det = det * d logabsdet``.
* ``cholesky(A)``: ``dL = L Phi(L^-1 dS L^-T)``, ``Phi`` the lower triangle with the diagonal
  halved. LAPACK reads only the lower triangle of A (the upper one for ``upper=True``), so ``dS``
  is the symmetric matrix made from that triangle of dA: the other triangle has derivative 0,
  exactly as NumPy's value does not depend on it.
* ``eigh(A)``: ``dw = diag(V^T dS V)``, ``dV = V (F * (V^T dS V))``, ``F_ij = 1/(w_j - w_i)``;
  ``dS`` from the triangle ``UPLO`` names, as for cholesky.
* ``svd(A)`` (reduced): with ``dP = U^T dA V``, ``ds = diag(dP)``,
  ``dU = U (F * (dP S + S dP^T)) + (I - U U^T) dA V S^-1`` and
  ``dV = V (F * (S dP + dP^T S)) + (I - V V^T) dA^T U S^-1``, ``F_ij = 1/(s_j^2 - s_i^2)``.
* ``qr(A)`` (reduced, m >= n): with ``X = Q^T dA R^-1`` and ``Omega = tril(X, -1) - T(tril(X, -1))``,
  ``dR = (X - Omega) R`` and ``dQ = Q Omega + (dA - Q Q^T dA) R^-1``.
* ``eig(A)`` with real eigenvalues: ``dw = diag(V^-1 dA V)``, ``dV = V (F * (V^-1 dA V))``,
  then the change of each column's norm taken out (NumPy returns unit eigenvectors).
* ``pinv`` (full rank), ``norm(ord='nuc'/2/-2)``, ``eigvalsh``, ``eigvals``, ``svdvals``,
  ``matrix_power`` and ``multi_dot`` are compositions of the above and of matmul.

Degenerate inputs (documented, never silently wrong): at repeated eigenvalues or singular values
the eigenvector and singular-vector derivatives are not unique and come out inf or NaN (the
eigenvalues' and singular values' own derivatives stay finite); a singular matrix makes
solve/inv/det/slogdet raise NumPy's LinAlgError; zero singular values make the singular vectors'
derivatives inf; complex eigenvalues of eig, ``full_matrices=True`` on a non-square matrix
(whose extra singular vectors are not unique), ``qr`` of a wide matrix or ``mode='complete'`` of a
tall one, ``hermitian=True`` and a rank-deficient ``pinv`` raise NotImplementedError. At
order 2, repeated eigenvalues or singular values make the second derivatives NaN (also of
``eigvalsh`` and the singular values alone, whose coefficients at order 2 go through the vectors).
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from . import _primitives as P
from ._rules import FUNCTIONS, register

__all__: list[str] = []

la = np.linalg


def _t(x: Any) -> Any:
    return np.swapaxes(x, -1, -2)


def _refuse(name: str, what: str) -> NotImplementedError:
    return NotImplementedError(f"numpy.linalg.{name}({what}) is not supported by gradtest's AD engines")


def _square(name: str, a: Any) -> np.ndarray:
    v = np.asarray(P.value(a))
    if v.ndim < 2 or v.shape[-1] != v.shape[-2]:
        raise la.LinAlgError("Last 2 dimensions of the array must be square")
    if v.dtype.kind == "c":
        raise TypeError(f"numpy.linalg.{name}: gradtest differentiates real matrices; complex "
                        "inputs are out of scope")
    return v


def _eye_like(v: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=v.dtype)


def _gaps(w: Any) -> Any:
    """``F_ij = 1 / (w_j - w_i)`` off the diagonal, 0 on it; inf where two values are equal.
    Written with elementwise ops only (the diagonal divides 0 by 1), so that it also records
    on an engine array (reverse order 2 differentiates it)."""
    n = w.shape[-1]
    eye = np.eye(n, dtype=np.asarray(P.value(w)).dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 - eye) / (w[..., None, :] - w[..., :, None] + eye)


def _symmetric(d: Any, upper: bool) -> Any:
    """The symmetric matrix LAPACK sees: the named triangle of d mirrored onto the other."""
    if upper:
        return np.triu(d) + _t(np.triu(d, 1))
    return np.tril(d) + _t(np.tril(d, -1))


# ---- solve, inv, det, slogdet ----------------------------------------------------------------


@register(la.solve, kink="singular matrix: LinAlgError (NumPy's)")
def _solve(a: Any, b: Any) -> Any:
    av = _square("solve", a)
    bv = np.asarray(P.value(b))
    x = la.solve(av, bv)
    vector = bv.ndim == 1

    def jvp_of(primals: Any, x: Any) -> Any:
        ainv = np.linalg.inv(primals[0])
        # NumPy 2: b is one vector only when it is 1-D; x then broadcasts as a column
        xm = x[..., None] if vector else x

        def jvp(da: Any, db: Any) -> Any:
            if vector:
                return (ainv @ (db[..., None] - da @ xm))[..., 0]
            return ainv @ (db - da @ xm)
        return jvp

    return P.linearized(x, [a, b], jvp_of, "numpy.linalg.solve")


@register(la.inv, kink="singular matrix: LinAlgError (NumPy's)")
def _inv(a: Any) -> Any:
    av = _square("inv", a)
    eye = np.broadcast_to(_eye_like(av, av.shape[-1]), av.shape)
    y = np.linalg.solve(a, eye)
    return P.with_value(y, la.inv(av))


def _logabsdet_jvp(a: Any) -> Any:
    ainv_t = _t(np.linalg.inv(a))

    def jvp(da: Any) -> Any:
        return np.sum(ainv_t * da, axis=(-2, -1))

    return jvp


@register(la.slogdet, kink="singular matrix: LinAlgError (the derivative of log(abs(det)) is infinite)")
def _slogdet(a: Any) -> Any:
    av = _square("slogdet", a)
    result = la.slogdet(av)
    logdet = P.linearized(np.asarray(result[1]), [a], lambda primals, _: _logabsdet_jvp(primals[0]),
                          "numpy.linalg.slogdet")
    return type(result)(result[0], logdet)


@register(la.det, kink="singular matrix: LinAlgError")
def _det(a: Any) -> Any:
    av = _square("det", a)
    value = np.asarray(la.det(av))

    def jvp_of(primals: Any, det: Any) -> Any:
        inner = _logabsdet_jvp(primals[0])
        return lambda da: det * inner(da)

    return P.linearized(value, [a], jvp_of, "numpy.linalg.det")


# ---- cholesky, eigh --------------------------------------------------------------------------


@register(la.cholesky, kink="reads one triangle of A (the other has derivative 0), as LAPACK does")
def _cholesky(a: Any, /, *, upper: bool = False) -> Any:
    av = _square("cholesky", a)
    value = la.cholesky(av, upper=True) if upper else la.cholesky(av)
    n = av.shape[-1]
    half_eye = 0.5 * _eye_like(av, n)

    def jvp_of(primals: Any, factor: Any) -> Any:
        lower = _t(factor) if upper else factor
        linv = np.linalg.inv(lower)

        def jvp(da: Any) -> Any:
            x = linv @ _symmetric(da, upper) @ _t(linv)
            dl = lower @ (np.tril(x) - x * half_eye)
            return _t(dl) if upper else dl
        return jvp

    return P.linearized(np.ascontiguousarray(value), [a], jvp_of, "numpy.linalg.cholesky")


def _check_uplo(name: str, uplo: str) -> bool:
    if uplo not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    return uplo == "U"


@register(la.eigh, kink="repeated eigenvalues: eigenvector derivatives inf/NaN (not unique); "
          "reads the UPLO triangle only")
def _eigh(a: Any, UPLO: str = "L") -> Any:
    upper = _check_uplo("eigh", UPLO)
    av = _square("eigh", a)
    result = la.eigh(av, UPLO=UPLO)

    def jvp_of(primals: Any, outputs: Any) -> Any:
        w, v = outputs
        f = _gaps(w)

        def jvp(da: Any) -> tuple[Any, Any]:
            m = _t(v) @ _symmetric(da, upper) @ v
            return np.diagonal(m, axis1=-2, axis2=-1), v @ (f * m)
        return jvp

    dw, dv = P.linearized(tuple(result), [a], jvp_of, "numpy.linalg.eigh")
    return type(result)(dw, dv)


@register(la.eigvalsh, kink="reads the UPLO triangle only")
def _eigvalsh(a: Any, UPLO: str = "L") -> Any:
    upper = _check_uplo("eigvalsh", UPLO)
    av = _square("eigvalsh", a)
    v0 = la.eigh(av, UPLO=UPLO)[1]

    def jvp_of(primals: Any, w: Any) -> Any:
        # the eigenvectors: the primal's, or (reverse order 2) recorded through eigh
        v = np.linalg.eigh(primals[0], UPLO=UPLO)[1] if P.is_active(primals[0]) else v0

        def jvp(da: Any) -> Any:
            return np.diagonal(_t(v) @ _symmetric(da, upper) @ v, axis1=-2, axis2=-1)
        return jvp

    return P.linearized(la.eigvalsh(av, UPLO=UPLO), [a], jvp_of, "numpy.linalg.eigvalsh")


# ---- svd, qr, eig ----------------------------------------------------------------------------


def _real_matrix(name: str, a: Any) -> np.ndarray:
    v = np.asarray(P.value(a))
    if v.ndim < 2:
        raise la.LinAlgError(f"{v.ndim}-dimensional array given. Array must be at least two-dimensional")
    if v.dtype.kind == "c":
        raise TypeError(f"numpy.linalg.{name}: complex inputs are out of scope for gradtest")
    return v


def _singular_values_jvp_of(u0: np.ndarray, vt0: np.ndarray) -> Any:
    def jvp_of(primals: Any, s: Any) -> Any:
        # the singular vectors: the primal's, or (reverse order 2) recorded through svd
        if P.is_active(primals[0]):
            u, _, vt = np.linalg.svd(primals[0], full_matrices=False)
        else:
            u, vt = u0, vt0

        def jvp(da: Any) -> Any:
            return np.diagonal(_t(u) @ da @ _t(vt), axis1=-2, axis2=-1)
        return jvp
    return jvp_of


@register(la.svd, kink="repeated or zero singular values: singular-vector derivatives inf/NaN "
          "(not unique); full_matrices=True on a non-square matrix: NotImplementedError")
def _svd(a: Any, full_matrices: bool = True, compute_uv: bool = True, hermitian: bool = False) -> Any:
    if hermitian:
        raise _refuse("svd", "..., hermitian=True")
    av = _real_matrix("svd", a)
    m, n = av.shape[-2:]
    if not compute_uv:
        u, s, vt = la.svd(av, full_matrices=False)
        return P.linearized(la.svd(av, compute_uv=False), [a], _singular_values_jvp_of(u, vt),
                            "numpy.linalg.svd")
    if full_matrices and m != n:
        raise _refuse("svd", "of a non-square matrix with full_matrices=True and compute_uv=True; "
                      "its extra singular vectors are not unique, so they have no derivative: "
                      "use full_matrices=False, or compute_uv=False for the singular values")
    result = la.svd(av, full_matrices=full_matrices)
    eye_m, eye_n = _eye_like(av, m), _eye_like(av, n)

    def jvp_of(primals: Any, outputs: Any) -> Any:
        u, s, vt = outputs
        v = _t(vt)
        f = _gaps(s * s)
        smat = s[..., None, :] * _eye_like(av, s.shape[-1])
        with np.errstate(divide="ignore"):
            sinv = (1.0 / s)[..., None, :]
        proj_u, proj_v = eye_m - u @ _t(u), eye_n - v @ vt

        def jvp(da: Any) -> tuple[Any, Any, Any]:
            dp = _t(u) @ da @ v
            dp_t = _t(dp)
            ds = np.diagonal(dp, axis1=-2, axis2=-1)
            du = u @ (f * (dp @ smat + smat @ dp_t)) + (proj_u @ da @ v) * sinv
            dv = v @ (f * (smat @ dp + dp_t @ smat)) + (proj_v @ _t(da) @ u) * sinv
            return du, ds, _t(dv)
        return jvp

    du, ds, dvt = P.linearized(tuple(result), [a], jvp_of, "numpy.linalg.svd")
    return type(result)(du, ds, dvt)


if hasattr(la, "svdvals"):
    @register(la.svdvals)
    def _svdvals(x: Any, /) -> Any:
        return np.linalg.svd(x, compute_uv=False)


@register(la.qr, kink="full rank, m >= n only (mode 'reduced', 'r', or 'complete' of a square matrix)")
def _qr(a: Any, mode: str = "reduced") -> Any:
    av = _real_matrix("qr", a)
    m, n = av.shape[-2:]
    if mode not in ("reduced", "r", "complete"):
        raise _refuse("qr", f"..., mode={mode!r}")
    if m < n:
        raise _refuse("qr", "of a wide matrix (more columns than rows)")
    if mode == "complete" and m != n:
        raise _refuse("qr", "..., mode='complete') of a tall matrix (its extra columns of Q are not "
                      "unique); use mode='reduced'")
    result = la.qr(av, mode="reduced")

    def jvp_of(primals: Any, outputs: Any) -> Any:
        q, r = outputs
        rinv = np.linalg.inv(r)

        def jvp(da: Any) -> tuple[Any, Any]:
            x = _t(q) @ da @ rinv
            low = np.tril(x, -1)
            omega = low - _t(low)
            dr = (x - omega) @ r
            dq = q @ omega + (da - q @ (_t(q) @ da)) @ rinv
            return dq, dr
        return jvp

    dq, dr = P.linearized(tuple(result), [a], jvp_of, "numpy.linalg.qr")
    if mode == "r":
        return dr
    return type(result)(dq, dr)


def _real_eig(name: str, av: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    result = la.eig(av)
    w, v = result
    if w.dtype.kind == "c" and not np.any(w.imag) and not np.any(v.imag):
        # NumPy >= 2.5 returns eig's results as complex whatever they are; real ones (zero
        # imaginary parts, as LAPACK computes them for real eigenvalues) are differentiated
        # as the real arrays they are, which user code reads through .real as it must anyway
        w, v = w.real, v.real
        result = type(result)(w, v)
    if w.dtype.kind == "c":
        raise NotImplementedError(
            f"numpy.linalg.{name} of a matrix with complex eigenvalues: gradtest differentiates "
            "real values only (complex results are out of scope); for a symmetric matrix use "
            "numpy.linalg.eigh")
    return result, w, v


@register(la.eig, kink="real eigenvalues only (complex: NotImplementedError; NumPy 2.5's complex "
          "results with zero imaginary parts come back real); repeated eigenvalues: eigenvector "
          "derivatives inf/NaN")
def _eig(a: Any) -> Any:
    av = _square("eig", a)
    result, w, v = _real_eig("eig", av)

    def jvp_of(primals: Any, outputs: Any) -> Any:
        w, v = outputs
        vinv = np.linalg.inv(v)
        f = _gaps(w)

        def jvp(da: Any) -> tuple[Any, Any]:
            mm = vinv @ da @ v
            dv = v @ (f * mm)
            # NumPy's eigenvectors have unit norm: remove the change of each column's length
            dv = dv - v * np.sum(v * dv, axis=-2, keepdims=True)
            return np.diagonal(mm, axis1=-2, axis2=-1), dv
        return jvp

    dw, dv = P.linearized((w, v), [a], jvp_of, "numpy.linalg.eig")
    return type(result)(dw, dv)


@register(la.eigvals, kink="real eigenvalues only (complex: NotImplementedError; NumPy 2.5's "
          "complex results with zero imaginary parts come back real)")
def _eigvals(a: Any) -> Any:
    av = _square("eigvals", a)
    _, w, v0 = _real_eig("eigvals", av)

    def jvp_of(primals: Any, w: Any) -> Any:
        # the eigenvectors: the primal's, or (reverse order 2) recorded through eig
        v = np.linalg.eig(primals[0])[1] if P.is_active(primals[0]) else v0
        vinv = np.linalg.inv(v)

        def jvp(da: Any) -> Any:
            return np.diagonal(vinv @ da @ v, axis1=-2, axis2=-1)
        return jvp

    return P.linearized(w, [a], jvp_of, "numpy.linalg.eigvals")


# ---- compositions ----------------------------------------------------------------------------


@register(la.pinv, kink="full rank only (rank-deficient: NotImplementedError)")
def _pinv(a: Any, rcond: Any = None, hermitian: bool = False, *, rtol: Any = np._NoValue) -> Any:
    if hermitian:
        raise _refuse("pinv", "..., hermitian=True")
    av = _real_matrix("pinv", a)
    kw: dict[str, Any] = {} if rcond is None else {"rcond": rcond}
    if rtol is not np._NoValue:
        kw["rtol"] = rtol
    value = la.pinv(av, **kw)
    s = la.svd(av, compute_uv=False)
    # the relative cutoff below which pinv zeroes a singular value: NumPy's default, or the
    # one given (rcond, or rtol as the array API names it)
    given = rcond if rcond is not None else (None if rtol is np._NoValue else rtol)
    cut = max(av.shape[-2:]) * np.finfo(av.dtype).eps if given is None else given
    if np.any(s <= np.asarray(cut)[..., None] * np.max(s, axis=-1, keepdims=True)):
        raise _refuse("pinv", "of a rank-deficient matrix (its derivative does not exist where the "
                      "rank can change)")
    u, s_t, vt = np.linalg.svd(a, full_matrices=False)
    y = _t(vt) @ (_t(u) / s_t[..., :, None])
    return P.with_value(y, value)


_BASE_NORM = FUNCTIONS.pop(la.norm)


@register(la.norm, kink=("at 0: derivative 0 (the chain rule's 0 * inf); ord=inf/-inf: ties split "
                         "evenly; ord='nuc'/2/-2 of a matrix: through the singular values"))
def _norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    """Matrix norms through the singular values; every other norm is the rule in _rules."""
    v = np.asarray(P.value(x))
    axes = (tuple(range(v.ndim)) if axis is None and ord is not None and v.ndim == 2
            else (axis if isinstance(axis, tuple) else None))
    if ord in ("nuc", 2, -2) and axes is not None and len(axes) == 2:
        row, col = (operator.index(ax) % v.ndim for ax in axes)
        value = la.norm(v, ord=ord, axis=axis, keepdims=keepdims)
        moved = np.moveaxis(x, (row, col), (-2, -1))
        s = np.linalg.svd(moved, compute_uv=False)
        y = np.sum(s, axis=-1) if ord == "nuc" else (np.max if ord == 2 else np.min)(s, axis=-1)
        if keepdims:
            y = np.expand_dims(y, axis=tuple(sorted((row, col))))
        return P.with_value(y, np.asarray(value))
    return _BASE_NORM(x, ord=ord, axis=axis, keepdims=keepdims)


@register(la.matrix_power)
def _matrix_power(a: Any, n: int) -> Any:
    av = _square("matrix_power", a)
    n = operator.index(n)
    value = la.matrix_power(av, n)
    if n == 0:
        return value
    base = np.linalg.inv(a) if n < 0 else a
    n = abs(n)
    result = None
    # binary powering, as NumPy does
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return P.with_value(result, value)


@register(la.multi_dot)
def _multi_dot(arrays: Any, *, out: Any = None) -> Any:
    if out is not None:
        raise _refuse("multi_dot", "..., out=...")
    arrays = list(arrays)
    if len(arrays) < 2:
        raise ValueError("Expecting at least two arrays.")
    value = la.multi_dot([P.value(x) for x in arrays])
    y = functools.reduce(np.matmul, arrays)
    return P.with_value(y, np.asarray(value)) if P.is_active(y) else value
