"""Derivative rules of scipy.signal's filters, scipy.ndimage's linear filters and scipy.fft's
real transforms, written once for both AD engines.

These functions compute in C after ``np.asarray``, so the engines never see them; like the other
SciPy modules (:mod:`gradtest._rules_special`), the module attributes are replaced by
dispatchers when the rules are installed. Every value is SciPy's own (computed on the primal
values, so it is SciPy's bit for bit, in SciPy's dtype).

Almost all of them are linear maps along one axis, whatever their boundary handling (ndimage's
modes, savgol_filter's polynomial fit at the edges, filtfilt's odd extension and initial
conditions, detrend's breakpoints): the derivative is that same map. gradtest gets the map's
matrix from SciPy itself, by applying the function to the columns of the identity (one call on a
2-D array, along its first axis), and multiplies the engine array by it (``matmul``, so both
engines and every order: a constant matrix has no curvature). The matrix has ``n * m`` entries
for an axis of length ``n`` and an output of length ``m``; axes longer than :data:`MAX_AXIS`
are refused with NotImplementedError instead of allocating it. An affine offset (ndimage's
``cval``) has derivative 0 and is carried by the value.

``lfilter`` is also differentiated in its coefficients ``b`` and ``a``: from ``a * y = b * x``
(causal convolutions truncated to the signal), ``dy = lfilter(1, a, b * dx + db * x - da * y)``.
Reverse order 2 records ``lfilter(1, a, .)`` as a triangular solve with ``a``'s Toeplitz matrix,
so the derivative of the coefficients in ``a`` is recorded too. Differentiating ``b`` or ``a``
together with ``zi=`` is refused.

``ndimage.correlate``/``convolve`` of N-d weights are sums of shifted copies of the padded input
(ndimage's modes are NumPy's pad modes: reflect = symmetric, mirror = reflect, nearest = edge,
wrap, constant), one copy per weight.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _primitives as P

__all__: list[str] = []

#: Longest axis a linear map is differentiated along (its matrix would have MAX_AXIS**2 entries).
MAX_AXIS = 4096

_LINEAR = "linear along the axis: the map's own matrix (from SciPy on the identity)"
KINKS = {
    "scipy.signal.lfilter": "in x and zi: linear; in b and a (without zi): dy = lfilter(1, a, b*dx + db*x - da*y)",
    "scipy.signal.filtfilt": _LINEAR + "; b and a constants",
    "scipy.signal.sosfilt": "linear in x and zi; sos a constant",
    "scipy.signal.sosfiltfilt": _LINEAR + "; sos a constant",
    "scipy.signal.savgol_filter": _LINEAR, "scipy.signal.detrend": _LINEAR,
    "scipy.signal.fftconvolve": "as convolve (values from fftconvolve)",
    "scipy.signal.oaconvolve": "as convolve (values from oaconvolve)",
    **{f"scipy.ndimage.{n}": _LINEAR + "; every mode; cval has derivative 0"
       for n in ("correlate1d", "convolve1d", "gaussian_filter1d", "uniform_filter1d")},
    "scipy.ndimage.gaussian_filter": "one gaussian_filter1d per axis (as SciPy computes it)",
    "scipy.ndimage.uniform_filter": "one uniform_filter1d per axis (as SciPy computes it)",
    "scipy.ndimage.correlate": "a sum of shifted copies of the padded input; every mode",
    "scipy.ndimage.convolve": "as correlate with the weights flipped",
    "scipy.ndimage.zoom": "in the input: one interpolation matrix per axis (SciPy's zoom of the identity), any order",
    "scipy.ndimage.map_coordinates": "order 1 only: multilinear in the input and the coordinates (at an integer "
                                     "coordinate, the cell above it; mode 'constant': 0 outside the input)",
    **{f"scipy.fft.{n}": _LINEAR for n in ("dct", "idct", "dst", "idst")},
}


def _refuse(name: str, what: str) -> NotImplementedError:
    return NotImplementedError(f"{name}(..., {what}) is not supported by gradtest's AD engines")


def _no_derivative(name: str, arg: str, x: Any) -> None:
    if P.is_active(x):
        raise NotImplementedError(f"{name}: no derivative in {arg} (it is held to be a constant; "
                                  "pass a plain array for it)")


def _axis_length(name: str, x: Any, axis: int) -> int:
    n = int(np.shape(P.value(x))[axis])
    if n > MAX_AXIS:
        raise NotImplementedError(f"{name} along an axis of length {n} is not supported by gradtest's "
                                  f"AD engines (its derivative is a dense matrix; at most {MAX_AXIS})")
    return n


def _apply_matrix(x: Any, axis: int, matrix: np.ndarray) -> Any:
    """The linear map ``matrix`` (m x n) applied along ``axis`` of x (length n)."""
    dtype = P.float_dtype(P.value(x))
    moved = np.moveaxis(x, axis, -1)
    return np.moveaxis(moved @ matrix.T.astype(dtype), -1, axis)


def _linear(name: str, x: Any, axis: int, on_identity: Callable[[np.ndarray], np.ndarray],
            value: Any) -> Any:
    """SciPy's ``value`` of a map linear (or affine) in x along ``axis``; ``on_identity(eye)``
    applies the map's linear part (an affine map with its offset, such as ``cval``, set to 0)
    along axis 0 of the identity, giving the matrix's columns."""
    if not P.is_active(x):
        return np.asarray(value)
    n = _axis_length(name, x, axis)
    return P.with_library_value(_apply_matrix(x, axis, np.asarray(on_identity(np.eye(n)))), value)


def _axis(axis: Any, ndim: int) -> int:
    return P.normalize_axes(axis, ndim)[0]


# ---- lfilter ---------------------------------------------------------------------------------

def _causal_conv(c: Any, v: Any) -> Any:
    """sum_k c[k] v[..., n - k] along the last axis of v, truncated to v's length (c: 1-D)."""
    n = np.shape(P.value(v))[-1]
    total = None
    for k in range(min(np.shape(P.value(c))[0], n)):
        shifted = v if k == 0 else np.concatenate([np.zeros(np.shape(P.value(v))[:-1] + (k,)), v[..., :n - k]],
                                                  axis=-1)
        term = c[k] * shifted
        total = term if total is None else total + term
    return total if total is not None else v * 0.0


def _toeplitz_solve(a: Any, v: Any) -> Any:
    """u with sum_k a[k] u[..., i - k] = v[..., i] along the last axis (a: an engine array)."""
    import scipy.linalg

    from . import _rules_special
    _rules_special.install("scipy.linalg")  # solve_triangular's rule, for engine arrays
    shape = np.shape(P.value(v))
    n, m = shape[-1], np.shape(P.value(a))[0]
    lag = np.subtract.outer(np.arange(n), np.arange(n))
    index = np.where((lag >= 0) & (lag < m), np.clip(lag, 0, m - 1), P.FILL)
    t = P.gather([a], lambda ia: np.where(index >= 0, ia[np.maximum(index, 0)], P.FILL))
    rows = np.reshape(v, (-1, n))
    u = scipy.linalg.solve_triangular(t, np.swapaxes(rows, 0, 1), lower=True)
    return np.reshape(np.swapaxes(u, 0, 1), shape)


def _lfilter_state_maps(b: np.ndarray, a: np.ndarray, n: int, p: int,
                        lfilter: Callable[..., Any]) -> tuple[np.ndarray, ...]:
    """lfilter's (y, zf) as linear maps of (x, zi) along an axis: y = X x + C zi, zf = D x + M zi."""
    y_x, zf_x = lfilter(b, a, np.eye(n), axis=0, zi=np.zeros((p, n)))
    y_z, zf_z = lfilter(b, a, np.zeros((n, p)), axis=0, zi=np.eye(p))
    return np.asarray(y_x), np.asarray(y_z), np.asarray(zf_x), np.asarray(zf_z)


def _lfilter_rule(lfilter: Callable[..., Any]) -> Callable[..., Any]:
    name = "scipy.signal.lfilter"

    def rule(b: Any, a: Any, x: Any, axis: int = -1, zi: Any = None) -> Any:
        value = lfilter(P.value(b), P.value(a), P.value(x), axis, P.value(zi))
        ndim = np.ndim(P.value(x))
        ax = _axis(axis, ndim)
        if P.is_active(b) or P.is_active(a):
            if zi is not None:
                raise _refuse(name, "zi=) with differentiated b or a")
            return _lfilter_coefficients(b, a, x, ax, value)
        bv, av = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
        n = _axis_length(name, x, ax)
        if zi is None:
            return _linear(name, x, ax, lambda eye: lfilter(bv, av, eye, axis=0), value)
        p = max(bv.size, av.size) - 1
        y_x, y_z, zf_x, zf_z = _lfilter_state_maps(bv, av, n, p, lfilter)
        zv = np.asarray(P.value(zi))
        if zv.ndim != ndim:  # SciPy's own error for a wrong zi shape came with the value already
            raise _refuse(name, "zi=) of a shape other than x's with the axis of length max(len(a), len(b)) - 1")
        y, zf = _apply_matrix(zi, ax, y_z), _apply_matrix(zi, ax, zf_z)
        if P.is_active(x):
            y, zf = y + _apply_matrix(x, ax, y_x), zf + _apply_matrix(x, ax, zf_x)
        return P.with_library_value(y, value[0]), P.with_library_value(zf, value[1])

    def _lfilter_coefficients(b: Any, a: Any, x: Any, ax: int, value: Any) -> Any:
        av = np.asarray(P.value(a), dtype=np.float64)
        n = _axis_length(name, x, ax)
        dtype = P.float_dtype(np.asarray(value))
        inverse = np.asarray(lfilter([1.0], av, np.eye(n), axis=0)).astype(dtype)  # u = a^-1 * v, causal

        def jvp_of(primals: Any, outputs: Any) -> Callable[..., Any]:
            pb, pa, px = primals
            xm = np.moveaxis(px, ax, -1)
            ym = np.moveaxis(outputs, ax, -1)

            def solve(v: Any) -> Any:
                if not P.is_active(pa):
                    return v @ inverse.T
                # reverse order 2: a^-1 * v as a triangular solve with a's Toeplitz matrix, so that
                # its derivative in a is recorded too
                return _toeplitz_solve(pa, v)

            def jvp(db: Any, da: Any, dx: Any) -> Any:
                v = _causal_conv(pb, np.moveaxis(dx, ax, -1)) + _causal_conv(db, xm) - _causal_conv(da, ym)
                return np.moveaxis(solve(v), -1, ax)
            return jvp

        bb = b if P.is_active(b) else np.asarray(b, dtype=np.float64)
        aa = a if P.is_active(a) else av
        return P.linearized(np.asarray(value), [bb, aa, x], jvp_of, name)

    return rule


# ---- scipy.signal ----------------------------------------------------------------------------

def signal_rules(ss: Any, original: Callable[[Any], Any],
                 convolve_rule: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """The scipy.signal rules, given the module, the function that finds SciPy's original
    function behind a dispatcher, and gradtest's rule of scipy.signal.convolve."""
    o = {name: original(getattr(ss, name)) for name in
         ("lfilter", "filtfilt", "sosfilt", "sosfiltfilt", "savgol_filter", "detrend", "fftconvolve",
          "oaconvolve")}

    def filtfilt(b: Any, a: Any, x: Any, axis: int = -1, padtype: Any = "odd", padlen: Any = None,
                 method: str = "pad", irlen: Any = None) -> Any:
        name = "scipy.signal.filtfilt"
        _no_derivative(name, "b", b)
        _no_derivative(name, "a", a)
        kw = dict(padtype=padtype, padlen=padlen, method=method, irlen=irlen)
        value = o["filtfilt"](b, a, P.value(x), axis, **kw)
        return _linear(name, x, _axis(axis, np.ndim(P.value(x))),
                       lambda eye: o["filtfilt"](b, a, eye, 0, **kw), value)

    def sosfilt(sos: Any, x: Any, axis: int = -1, zi: Any = None) -> Any:
        name = "scipy.signal.sosfilt"
        _no_derivative(name, "sos", sos)
        if zi is not None:
            return _sosfilt_zi(sos, x, axis, zi)
        value = o["sosfilt"](sos, P.value(x), axis)
        return _linear(name, x, _axis(axis, np.ndim(P.value(x))), lambda eye: o["sosfilt"](sos, eye, 0), value)

    def _sosfilt_zi(sos: Any, x: Any, axis: int, zi: Any) -> Any:
        name = "scipy.signal.sosfilt"
        value = o["sosfilt"](sos, P.value(x), axis, P.value(zi))
        ndim = np.ndim(P.value(x))
        ax = _axis(axis, ndim)
        n = _axis_length(name, x, ax)
        sections = np.shape(np.asarray(sos))[0]
        if np.ndim(P.value(zi)) != ndim + 1:
            raise _refuse(name, "zi=) of a shape other than (n_sections, ..., 2, ...)")
        # the state of every section, along one axis of length 2 * sections (section-major)
        q = 2 * sections
        zm = np.moveaxis(zi, ax + 1, -1)  # (sections, ..., 2)
        zm = np.moveaxis(zm, 0, -2)       # (..., sections, 2)
        zflat = np.reshape(zm, np.shape(P.value(zm))[:-2] + (q,))
        probe_zi = np.moveaxis(np.eye(q).reshape(q, sections, 2), 0, -1)  # (sections, 2, q)
        y_x, zf_x = o["sosfilt"](sos, np.eye(n), 0, np.zeros((sections, 2, n)))
        y_z, zf_z = o["sosfilt"](sos, np.zeros((n, q)), 0, probe_zi)
        zf_x = np.moveaxis(np.asarray(zf_x), -1, 0).reshape(n, q).T       # (q, n)
        zf_z = np.moveaxis(np.asarray(zf_z), -1, 0).reshape(q, q).T       # (q, q)
        xm = np.moveaxis(x, ax, -1)
        dtype = P.float_dtype(np.asarray(value[0]))
        y = zflat @ np.asarray(y_z).T.astype(dtype)
        zf = zflat @ zf_z.T.astype(dtype)
        if P.is_active(x):
            y = y + xm @ np.asarray(y_x).T.astype(dtype)
            zf = zf + xm @ zf_x.T.astype(dtype)
        y = np.moveaxis(y, -1, ax)
        zf = np.reshape(zf, np.shape(P.value(zf))[:-1] + (sections, 2))
        zf = np.moveaxis(np.moveaxis(zf, -2, 0), -1, ax + 1)
        return P.with_library_value(y, value[0]), P.with_library_value(zf, value[1])

    def sosfiltfilt(sos: Any, x: Any, axis: int = -1, padtype: Any = "odd", padlen: Any = None) -> Any:
        name = "scipy.signal.sosfiltfilt"
        _no_derivative(name, "sos", sos)
        value = o["sosfiltfilt"](sos, P.value(x), axis, padtype, padlen)
        return _linear(name, x, _axis(axis, np.ndim(P.value(x))),
                       lambda eye: o["sosfiltfilt"](sos, eye, 0, padtype, padlen), value)

    def savgol_filter(x: Any, window_length: int, polyorder: int, deriv: int = 0, delta: float = 1.0,
                      axis: int = -1, mode: str = "interp", cval: float = 0.0) -> Any:
        kw = dict(deriv=deriv, delta=delta, mode=mode)
        value = o["savgol_filter"](P.value(x), window_length, polyorder, axis=axis, cval=cval, **kw)
        return _linear("scipy.signal.savgol_filter", x, _axis(axis, np.ndim(P.value(x))),
                       lambda eye: o["savgol_filter"](eye, window_length, polyorder, axis=0, cval=0.0, **kw),
                       value)

    def detrend(data: Any, axis: int = -1, type: str = "linear", bp: Any = 0, overwrite_data: bool = False) -> Any:
        value = o["detrend"](P.value(data), axis=axis, type=type, bp=bp)
        return _linear("scipy.signal.detrend", data, _axis(axis, np.ndim(P.value(data))),
                       lambda eye: o["detrend"](eye, axis=0, type=type, bp=bp), value)

    def by_convolve(label: str) -> Callable[..., Any]:
        def rule(in1: Any, in2: Any, mode: str = "full", axes: Any = None) -> Any:
            if axes is not None:
                raise _refuse(f"scipy.signal.{label}", "axes=)")
            value = o[label](P.value(in1), P.value(in2), mode)
            return P.with_library_value(convolve_rule(in1, in2, mode), value)
        return rule

    return {"lfilter": _lfilter_rule(o["lfilter"]), "filtfilt": filtfilt, "sosfilt": sosfilt,
            "sosfiltfilt": sosfiltfilt, "savgol_filter": savgol_filter, "detrend": detrend,
            "fftconvolve": by_convolve("fftconvolve"), "oaconvolve": by_convolve("oaconvolve")}


# ---- scipy.ndimage ---------------------------------------------------------------------------

#: ndimage's boundary modes as np.pad's (for a filter, grid-constant pads as constant does)
_PAD_MODES = {"reflect": "symmetric", "grid-mirror": "symmetric", "mirror": "reflect", "nearest": "edge",
              "wrap": "wrap", "grid-wrap": "wrap", "constant": "constant", "grid-constant": "constant"}


def _per_axis(v: Any, ndim: int) -> list[Any]:
    if isinstance(v, str) or np.ndim(v) == 0:
        return [v] * ndim
    v = list(v)
    if len(v) != ndim:
        raise RuntimeError("sequence argument must have length equal to input rank")
    return v


def _check_separable(name: str, scipy_map: Callable[[np.ndarray], Any], shape: tuple[int, ...],
                     matrices: list[np.ndarray]) -> None:
    """Refuses (NotImplementedError) unless the per-axis matrices reproduce SciPy's map on a
    random input of ``shape``: the derivative is never a map SciPy does not compute."""
    probe = np.random.default_rng(0).standard_normal(shape)
    ours = probe
    for k, m in enumerate(matrices):
        ours = np.moveaxis(np.moveaxis(ours, k, -1) @ m.T, -1, k)
    _check_reproduced(name, ours, np.asarray(scipy_map(probe)))


def _check_reproduced(name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    scale = max(float(np.max(np.abs(theirs), initial=0.0)), 1.0)
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=1e-9, atol=1e-12 * scale):
        raise NotImplementedError(f"{name} with these arguments is not supported by gradtest's AD engines (its "
                                  "derivative as gradtest builds it did not reproduce SciPy's map on a random input)")


def _corner_index(i: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """ndimage's extension of an axis of length n at integer positions i: (index, in range)."""
    if mode == "nearest":
        return np.clip(i, 0, n - 1), np.ones(i.shape, dtype=bool)
    if mode == "grid-wrap":
        return np.mod(i, n), np.ones(i.shape, dtype=bool)
    if mode in ("reflect", "grid-mirror"):
        m = np.mod(i, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m), np.ones(i.shape, dtype=bool)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i), np.ones(i.shape, dtype=bool)
        m = np.mod(i, 2 * n - 2)
        return np.where(m < n, m, 2 * n - 2 - m), np.ones(i.shape, dtype=bool)
    # grid-constant (and constant, whose points are kept inside): cval beyond the edges
    inside = (i >= 0) & (i < n)
    return np.clip(i, 0, n - 1), inside


def _linear_interpolation(name: str, input: Any, coordinates: Any, mode: str, cval: float,
                          scipy_map: Callable[[np.ndarray], Any]) -> Any:
    """map_coordinates(input, coordinates, order=1): the sum over the 2^d corners of each point of
    weight (a product of t or 1 - t per axis, t the coordinate's fraction) times the corner's
    sample, written with engine operations so that input and coordinates are differentiated."""
    if mode not in _PAD_MODES:
        raise RuntimeError("boundary mode not supported")
    shape = np.shape(P.value(input))
    d = len(shape)
    cv = np.asarray(P.value(coordinates), dtype=np.float64)
    if cv.shape[:1] != (d,):
        raise RuntimeError("invalid shape for coordinate array")
    coords = coordinates if P.is_active(coordinates) else cv
    inside = np.ones(cv.shape[1:], dtype=bool)
    axes_t, bases = [], []
    for k, n in enumerate(shape):
        c = coords[k]
        ck = cv[k]
        if mode == "wrap" and n > 1:  # SciPy wraps the coordinate itself, with period n - 1
            shift = np.floor(ck / (n - 1)) * (n - 1)
            c, ck = c - shift, ck - shift
        if mode in ("constant", "wrap"):
            inside &= (ck >= 0) & (ck <= n - 1)
            base = np.clip(np.floor(ck), 0, max(n - 2, 0)).astype(np.intp)
        else:
            base = np.floor(ck).astype(np.intp)
        axes_t.append(c - base)
        bases.append(base)
    if mode == "wrap":
        inside = np.ones_like(inside)
    flat_input = np.reshape(input, (-1,)) if P.is_active(input) else np.asarray(input, dtype=np.float64).reshape(-1)
    probe = np.random.default_rng(0).standard_normal(shape)
    total, check = None, None
    for corner in np.ndindex(*(2,) * d):
        index, valid = [], np.ones(cv.shape[1:], dtype=bool)
        for k, n in enumerate(shape):
            ik, vk = _corner_index(bases[k] + corner[k], n, mode)
            index.append(ik)
            valid &= vk
        flat = np.ravel_multi_index(tuple(index), shape) if d else np.zeros(cv.shape[1:], dtype=np.intp)
        weight, plain_weight = None, None
        for k in range(d):
            t = axes_t[k]
            w = t if corner[k] else 1.0 - t
            weight = w if weight is None else weight * w
            pw = P.value(w)
            plain_weight = pw if plain_weight is None else plain_weight * pw
        if P.is_active(input):
            sample = P.gather([flat_input], lambda ix, f=flat, v=valid: np.where(v, ix[f], P.FILL))
            sample = sample + np.where(valid, 0.0, cval)
        else:
            sample = np.where(valid, flat_input[flat], cval)
        term = weight * sample
        total = term if total is None else total + term
        probe_term = plain_weight * np.where(valid, probe.reshape(-1)[flat], 0.0)
        check = probe_term if check is None else check + probe_term
    _check_reproduced(name, np.where(inside, check, 0.0), np.asarray(scipy_map(probe)))
    return np.where(inside, total, 0.0)


def ndimage_rules(nd: Any, original: Callable[[Any], Any]) -> dict[str, Callable[..., Any]]:
    """The scipy.ndimage rules, given the module and the original-function finder."""
    o = {name: original(getattr(nd, name)) for name in
         ("correlate1d", "convolve1d", "gaussian_filter1d", "uniform_filter1d", "gaussian_filter",
          "uniform_filter", "correlate", "convolve", "zoom", "map_coordinates")}

    def no_output(name: str, output: Any) -> None:
        if output is not None:
            raise _refuse(f"scipy.ndimage.{name}", "output=)")

    def one_d(label: str) -> Callable[..., Any]:
        signature = inspect.signature(o[label])

        def rule(input: Any, *args: Any, **kwargs: Any) -> Any:
            name = f"scipy.ndimage.{label}"
            bound = signature.bind(input, *args, **kwargs).arguments
            if bound.pop("output", None) is not None:
                raise _refuse(name, "output=)")
            for k, v in bound.items():
                if k != "input":
                    _no_derivative(name, k, v)
            axis = bound.pop("axis", -1)
            bound.pop("input")
            value = o[label](P.value(input), axis=axis, **bound)
            linear_part = {**bound, "cval": 0.0} if "cval" in bound else bound
            return _linear(name, input, _axis(axis, np.ndim(P.value(input))),
                           lambda eye: o[label](eye, axis=0, **linear_part), value)
        return rule

    def gaussian_filter(input: Any, sigma: Any, order: Any = 0, output: Any = None, mode: Any = "reflect",
                        cval: float = 0.0, truncate: float = 4.0, *, radius: Any = None, axes: Any = None) -> Any:
        no_output("gaussian_filter", output)
        if axes is not None:
            raise _refuse("scipy.ndimage.gaussian_filter", "axes=)")
        _no_derivative("scipy.ndimage.gaussian_filter", "sigma", sigma)
        _no_derivative("scipy.ndimage.gaussian_filter", "cval", cval)
        value = o["gaussian_filter"](P.value(input), sigma, order, None, mode, cval, truncate, radius=radius)
        if not P.is_active(input):
            return value
        ndim = np.ndim(P.value(input))
        y = input
        for ax, (s, od, md, r) in enumerate(zip(_per_axis(sigma, ndim), _per_axis(order, ndim),
                                                _per_axis(mode, ndim), _per_axis(radius, ndim))):
            if s > 1e-15:  # SciPy skips the axes it does not smooth
                n = _axis_length("scipy.ndimage.gaussian_filter", input, ax)
                y = _apply_matrix(y, ax, np.asarray(o["gaussian_filter1d"](
                    np.eye(n), s, 0, od, None, md, 0.0, truncate, radius=r)))
        return P.with_library_value(y, value)

    def uniform_filter(input: Any, size: Any = 3, output: Any = None, mode: Any = "reflect",
                       cval: float = 0.0, origin: Any = 0, *, axes: Any = None) -> Any:
        no_output("uniform_filter", output)
        if axes is not None:
            raise _refuse("scipy.ndimage.uniform_filter", "axes=)")
        _no_derivative("scipy.ndimage.uniform_filter", "cval", cval)
        value = o["uniform_filter"](P.value(input), size, None, mode, cval, origin)
        if not P.is_active(input):
            return value
        ndim = np.ndim(P.value(input))
        y = input
        for ax, (s, md, org) in enumerate(zip(_per_axis(size, ndim), _per_axis(mode, ndim),
                                              _per_axis(origin, ndim))):
            if s > 1:
                n = _axis_length("scipy.ndimage.uniform_filter", input, ax)
                y = _apply_matrix(y, ax, np.asarray(o["uniform_filter1d"](np.eye(n), s, 0, None, md, 0.0, org)))
        return P.with_library_value(y, value)

    def nd_correlate(label: str) -> Callable[..., Any]:
        def rule(input: Any, weights: Any, output: Any = None, mode: str = "reflect", cval: float = 0.0,
                 origin: Any = 0, *, axes: Any = None) -> Any:
            name = f"scipy.ndimage.{label}"
            no_output(label, output)
            if axes is not None:
                raise _refuse(name, "axes=)")
            _no_derivative(name, "weights", weights)
            _no_derivative(name, "cval", cval)
            if mode not in _PAD_MODES:
                raise RuntimeError("boundary mode not supported")
            value = o[label](P.value(input), weights, None, mode, cval, origin)
            if not P.is_active(input):
                return value
            w = np.asarray(weights, dtype=np.float64)
            ndim = np.ndim(P.value(input))
            origins = [int(v) for v in _per_axis(origin, ndim)]
            if label == "convolve":  # SciPy: flipped weights, negated origins, even sizes shifted
                w = w[tuple(slice(None, None, -1) for _ in range(w.ndim))]
                origins = [-org - (1 - k % 2) for org, k in zip(origins, w.shape)]
            if w.ndim != ndim:
                raise RuntimeError("filter weights array has incorrect shape.")
            centres = [k // 2 + org for k, org in zip(w.shape, origins)]
            widths = [(c, k - 1 - c) for c, k in zip(centres, w.shape)]
            if any(lo < 0 or hi < 0 for lo, hi in widths):
                raise ValueError("invalid origin")
            pad_mode = _PAD_MODES[mode]
            padded = (np.pad(input, widths, mode="constant", constant_values=0.0) if pad_mode == "constant"
                      else np.pad(input, widths, mode=pad_mode))
            shape = np.shape(P.value(input))
            total = None
            for j in np.ndindex(*w.shape):
                if w[j] == 0.0:
                    continue
                term = padded[tuple(slice(jd, jd + s) for jd, s in zip(j, shape))] * w[j]
                total = term if total is None else total + term
            return P.with_library_value(total if total is not None else input * 0.0, value)
        return rule

    def zoom(input: Any, zoom: Any, output: Any = None, order: int = 3, mode: str = "constant", cval: float = 0.0,
             prefilter: bool = True, *, grid_mode: bool = False) -> Any:
        name = "scipy.ndimage.zoom"
        no_output("zoom", output)
        _no_derivative(name, "zoom", zoom)
        _no_derivative(name, "cval", cval)
        kw = dict(order=order, mode=mode, prefilter=prefilter, grid_mode=grid_mode)
        value = o["zoom"](P.value(input), zoom, cval=cval, **kw)
        if not P.is_active(input):
            return value
        ndim = np.ndim(P.value(input))
        # a tensor grid: one 1-D interpolation matrix per axis, SciPy's zoom of the identity
        matrices = [np.asarray(o["zoom"](np.eye(_axis_length(name, input, k)), (z, 1.0), cval=0.0, **kw))
                    for k, z in enumerate(_per_axis(zoom, ndim))]
        _check_separable(name, lambda v: o["zoom"](v, zoom, cval=0.0, **kw), np.shape(P.value(input)), matrices)
        y = input
        for k, m in enumerate(matrices):
            y = _apply_matrix(y, k, m)
        return P.with_library_value(y, value)

    def map_coordinates(input: Any, coordinates: Any, output: Any = None, order: int = 3, mode: str = "constant",
                        cval: float = 0.0, prefilter: bool = True) -> Any:
        name = "scipy.ndimage.map_coordinates"
        no_output("map_coordinates", output)
        _no_derivative(name, "cval", cval)
        if order != 1:
            raise _refuse(name, f"order={order}) (order=1, linear interpolation, is supported")
        value = o["map_coordinates"](P.value(input), P.value(coordinates), None, order, mode, cval, prefilter)
        return P.with_library_value(_linear_interpolation(name, input, coordinates, mode, cval,
                                           lambda v: o["map_coordinates"](v, P.value(coordinates), None, 1, mode,
                                                                          0.0, prefilter)), value)

    return {"zoom": zoom, "map_coordinates": map_coordinates, "correlate1d": one_d("correlate1d"), "convolve1d": one_d("convolve1d"),
            "gaussian_filter1d": one_d("gaussian_filter1d"), "uniform_filter1d": one_d("uniform_filter1d"),
            "gaussian_filter": gaussian_filter, "uniform_filter": uniform_filter,
            "correlate": nd_correlate("correlate"), "convolve": nd_correlate("convolve")}


# ---- scipy.fft -------------------------------------------------------------------------------

def fft_rules(sf: Any, original: Callable[[Any], Any]) -> dict[str, Callable[..., Any]]:
    """scipy.fft's real-to-real transforms (dct, idct, dst, idst): linear along their axis."""
    def transform(label: str) -> Callable[..., Any]:
        f = original(getattr(sf, label))

        def rule(x: Any, type: int = 2, n: Any = None, axis: int = -1, norm: Any = None,
                 overwrite_x: bool = False, workers: Any = None, orthogonalize: Any = None) -> Any:
            kw = dict(type=type, n=n, norm=norm, orthogonalize=orthogonalize)
            value = f(P.value(x), axis=axis, **kw)
            return _linear(f"scipy.fft.{label}", x, _axis(axis, np.ndim(P.value(x))),
                           lambda eye: f(eye, axis=0, **kw), value)
        return rule

    return {label: transform(label) for label in ("dct", "idct", "dst", "idst")}
