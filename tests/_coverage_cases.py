"""A NumPy/SciPy gradient test suite written the way users write their checks.

Each case is a function of plain arrays and the arrays to differentiate it at, as one would
write it for any AD tool: NumPy and SciPy called directly, no gradtest types, no special care.
Inputs sit where the function is smooth (FD is the ground truth), plus edge inputs named as such
(zeros, ties, negative values, NaN masked out by nan-reductions) where the derivative is still
well defined. ``run_case`` checks one case in one engine and classifies the result;
``tests/coverage_report.py`` prints the pass rates per engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import gradtest


@dataclasses.dataclass(frozen=True)
class Case:
    """One gradient check: ``f(*args, **kwargs)`` differentiated at the float arrays in args."""

    name: str
    group: str
    f: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    scipy: bool = False

    def as_float32(self) -> Case:
        args = tuple(a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64
                     else a for a in self.args)
        return dataclasses.replace(self, name=self.name + "[float32]", args=args)


_RNG = np.random.default_rng(20261202)


def R(*shape: int) -> np.ndarray:
    """Standard normal values (fixed seed): the usual 'random input'."""
    return _RNG.standard_normal(shape)


def U(*shape: int, lo: float = 0.2, hi: float = 1.8) -> np.ndarray:
    """Uniform values in [lo, hi): positive inputs for log-like functions."""
    return _RNG.uniform(lo, hi, shape)


def SPD(n: int, batch: tuple[int, ...] = ()) -> np.ndarray:
    """A well-conditioned symmetric positive definite matrix (or a stack of them)."""
    a = _RNG.standard_normal(batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


def SYM(n: int) -> np.ndarray:
    """A symmetric matrix with well separated eigenvalues."""
    q, _ = np.linalg.qr(_RNG.standard_normal((n, n)))
    return q @ np.diag(np.arange(1.0, n + 1) * 1.5 - 2.0) @ q.T


def WELL(m: int, n: int) -> np.ndarray:
    """An m x n matrix with well separated singular values (so svd/pinv/norm(2) are smooth)."""
    u, _ = np.linalg.qr(_RNG.standard_normal((m, m)))
    v, _ = np.linalg.qr(_RNG.standard_normal((n, n)))
    s = np.zeros((m, n))
    k = min(m, n)
    s[np.arange(k), np.arange(k)] = np.linspace(3.0, 1.0, k)
    return u @ s @ v.T


def REALEIG(n: int) -> np.ndarray:
    """A non-symmetric matrix with distinct real eigenvalues."""
    p = _RNG.standard_normal((n, n)) + n * np.eye(n)
    return p @ np.diag(np.arange(1.0, n + 1)) @ np.linalg.inv(p)


S = np.sum
CASES: list[Case] = []


def case(name: str, group: str, f: Callable[..., Any], *args: Any, scipy: bool = False,
         **kwargs: Any) -> None:
    CASES.append(Case(name, group, f, args, kwargs, scipy))


# ---- building arrays from differentiated values ---------------------------------------------
G = "build"
case("array_of_scalars", G, lambda x: S(np.array([x[0], 2 * x[1], x[2] ** 2]) ** 2), R(3))
case("array_nested", G, lambda x: np.linalg.norm(np.array([[x[0], x[1]], [x[2], 1.0]])), R(3))
case("array_of_arrays", G, lambda x, y: S(np.sin(np.array([x, y, x * y]))), R(4), R(4))
case("array_mixed_const", G, lambda x: S(np.array([x, np.ones(3)]) @ np.arange(3.0)), R(3))
case("array_0d_result", G, lambda x: np.array(S(x * x)) * 3.0, R(3))
case("asarray_list", G, lambda x: S(np.asarray([x[1], x[0]]) * np.array([1.0, 3.0])), R(2))
case("r_", G, lambda x, y: S(np.r_[x, y, x] ** 2), R(3), R(2))
case("r_scalar", G, lambda x: S(np.exp(np.r_[x, 1.0, x[0]])), R(3))
case("r_slice", G, lambda x: S(np.r_[x[:2], 0.0, x[1:]] * np.arange(5.0)), R(3))
case("c_", G, lambda x, y: S(np.c_[x, y] @ np.array([1.0, -2.0])), R(3), R(3))
case("c_2d", G, lambda x: S(np.c_[x, x ** 2] ** 2), R(3, 2))
case("append", G, lambda x, y: S(np.append(x, y) ** 3), R(3), R(2))
case("append_scalar", G, lambda x: S(np.tanh(np.append(x, 2.0))), R(3))
case("append_axis", G, lambda x, y: S(np.append(x, y, axis=0) * np.arange(3.0)), R(2, 3), R(1, 3))
case("column_stack", G, lambda x, y: S(np.column_stack([x, y]) ** 2), R(3), R(3))
case("dstack", G, lambda x, y: S(np.dstack([x, y]) ** 2), R(2, 2), R(2, 2))

# ---- linear algebra --------------------------------------------------------------------------
G = "linalg"
la = np.linalg
case("det", G, la.det, R(3, 3))
case("det_batched", G, lambda a: S(la.det(a)), R(2, 3, 3))
case("det_spd", G, la.det, SPD(4))
case("det_negative", G, la.det, np.array([[0.0, 1.0, 0.3], [1.0, 0.2, 0.0], [0.5, 0.0, 2.0]]))
case("slogdet_negative_sign", G, lambda a: la.slogdet(a)[1], np.array([[0.0, 1.0], [1.0, 0.5]]))
case("inv_permutation_like", G, la.inv, np.array([[0.0, 1.0], [1.0, 0.1]]))
case("svd_negative_entries", G, lambda a: la.svd(a, compute_uv=False), -WELL(3, 3))
case("eigh_negative_definite", G, lambda a: la.eigh(a)[0], -SPD(3))
case("cholesky_upper", G, lambda a: la.cholesky(a, upper=True), SPD(3))
case("qr_mode_r", G, lambda a: la.qr(a, mode="r"), R(4, 3))
case("norm_nuc_axis", G, lambda a: la.norm(a, "nuc", axis=(1, 2)), np.stack([WELL(2, 3), WELL(2, 3)]))
case("norm_2_keepdims", G, lambda a: la.norm(a, 2, keepdims=True), WELL(3, 2))
case("slogdet", G, lambda a: la.slogdet(a)[1], R(3, 3))
case("slogdet_tuple", G, lambda a: la.slogdet(a)[0] * la.slogdet(a)[1], SPD(3))
case("slogdet_batched", G, lambda a: S(la.slogdet(a)[1]), SPD(3, (2,)))
case("inv", G, la.inv, SPD(3))
case("inv_general", G, lambda a: S(la.inv(a) ** 2), R(3, 3) + 3 * np.eye(3))
case("inv_batched", G, la.inv, SPD(2, (3,)))
case("solve_vector", G, la.solve, SPD(3), R(3))
case("solve_matrix", G, la.solve, R(3, 3) + 3 * np.eye(3), R(3, 2))
case("solve_batched", G, lambda a, b: la.solve(a, b), SPD(3, (2,)), R(2, 3, 1))
case("solve_batched_vector", G, lambda a, b: la.solve(a, b), SPD(3, (2,)), R(3))
case("solve_const_matrix", G, lambda b: S(la.solve(SPD_CONST, b) ** 2), R(3))
case("cholesky", G, la.cholesky, SPD(3))
case("cholesky_sym_input", G, lambda a: la.cholesky(a @ a.T + 3 * np.eye(3)), R(3, 3))
case("cholesky_batched", G, la.cholesky, SPD(3, (2,)))
case("cholesky_logdet", G, lambda a: 2 * S(np.log(np.diagonal(la.cholesky(a)))), SPD(4))
case("eigh_values", G, lambda a: la.eigh(a)[0], SYM(3))
case("eigh_sym_input", G, lambda a: S(la.eigh(a + a.T)[0] ** 3), R(3, 3))
case("eigh_vectors_abs", G, lambda a: np.abs(la.eigh(a)[1]), SYM(3))
case("eigh_reconstruct", G, lambda a: (lambda w, v: v @ np.diag(np.exp(w)) @ v.T)(*la.eigh(a)), SYM(3))
case("eigh_upper", G, lambda a: la.eigh(a, UPLO="U")[0], SYM(3))
case("eigvalsh", G, lambda a: la.eigvalsh(a), SYM(4))
case("svd_values", G, lambda a: la.svd(a, compute_uv=False), WELL(3, 4))
case("svd_values_tall", G, lambda a: la.svd(a, compute_uv=False), WELL(4, 2))
case("svd_reduced_reconstruct", G, lambda a: (lambda u, s, vt: u @ np.diag(s ** 2) @ vt)(
    *la.svd(a, full_matrices=False)), WELL(4, 3))
case("svd_u_abs", G, lambda a: np.abs(la.svd(a, full_matrices=False)[0]), WELL(4, 3))
case("svd_vt_abs", G, lambda a: np.abs(la.svd(a, full_matrices=False)[2]), WELL(3, 4))
case("svd_full_square", G, lambda a: (lambda u, s, vt: S(np.abs(u)) + S(np.abs(vt)) + S(s))(*la.svd(a)),
     WELL(3, 3))
case("svdvals_sum", G, lambda a: S(la.svd(a)[1]), WELL(3, 3))
case("qr_r", G, lambda a: la.qr(a)[1], R(4, 3))
case("qr_q", G, lambda a: la.qr(a)[0], R(4, 3))
case("qr_square", G, lambda a: (lambda q, r: q @ np.diag(np.diag(r) ** 2))(*la.qr(a)), R(3, 3))
case("pinv_tall", G, la.pinv, WELL(4, 2))
case("pinv_wide", G, la.pinv, WELL(2, 3))
case("pinv_square", G, lambda a: S(la.pinv(a) @ np.arange(3.0)), WELL(3, 3))
case("eig_real_values", G, lambda a: np.real(la.eig(a)[0]), REALEIG(3))
case("eigvals_real", G, lambda a: S(np.real(la.eigvals(a)) ** 2), REALEIG(3))
case("norm_nuc", G, lambda a: la.norm(a, "nuc"), WELL(3, 4))
case("norm_2", G, lambda a: la.norm(a, 2), WELL(3, 3))
case("norm_minus_2", G, lambda a: la.norm(a, -2), WELL(4, 3))
case("norm_fro", G, lambda a: la.norm(a, "fro"), R(3, 4))
case("norm_vector", G, lambda x: la.norm(x), R(5))
case("norm_vector_ord3", G, lambda x: la.norm(x, 3), R(5))
case("norm_axis", G, lambda a: la.norm(a, axis=1), R(3, 4))
case("matrix_power", G, lambda a: la.matrix_power(a, 3), R(3, 3))
case("matrix_power_neg", G, lambda a: la.matrix_power(a, -2), SPD(3))
case("multi_dot", G, lambda a, b, c: la.multi_dot([a, b, c]), R(2, 3), R(3, 4), R(4, 2))
case("trace_inv", G, lambda a: np.trace(la.inv(a)), SPD(3))
case("inv_4d", G, la.inv, SPD(3, (2, 2)))
case("solve_4d", G, la.solve, SPD(3, (2, 2)), R(2, 2, 3, 1))
case("eigh_vectors_batched", G, lambda a: np.abs(la.eigh(a + np.swapaxes(a, -1, -2))[1]), R(2, 3, 3))
case("svd_vectors_batched", G, lambda a: np.abs(la.svd(a, full_matrices=False)[0]), np.stack([WELL(3, 2), WELL(3, 2)]))
case("eigvals_batched", G, lambda a: np.real(la.eigvals(a @ np.swapaxes(a, -1, -2) + np.eye(3))), R(2, 3, 3))
case("pinv_batched", G, la.pinv, np.stack([WELL(3, 2), WELL(3, 2)]))
case("qr_q_batched", G, lambda a: la.qr(a)[0], R(2, 3, 2))
case("real_if_close", G, lambda x: np.real_if_close(x) ** 2, R(3))
case("gaussian_nll", G, lambda a, x: 0.5 * x @ la.solve(a, x) + 0.5 * la.slogdet(a)[1], SPD(3), R(3))

# ---- einsum ----------------------------------------------------------------------------------
G = "einsum"
es = np.einsum
case("einsum_matmul", G, lambda a, b: es("ij,jk->ik", a, b), R(2, 3), R(3, 2))
case("einsum_implicit", G, lambda a, b: es("ij,jk", a, b), R(2, 3), R(3, 2))
case("einsum_diag", G, lambda a: es("ii->i", a), R(3, 3))
case("einsum_trace", G, lambda a: es("ii", a), R(3, 3))
case("einsum_sum_all", G, lambda a: es("ij->", a), R(3, 2))
case("einsum_transpose", G, lambda a: es("ij->ji", a), R(3, 2))
case("einsum_dot", G, lambda x, y: es("i,i", x, y), R(4), R(4))
case("einsum_outer", G, lambda x, y: es("i,j->ij", x, y), R(3), R(2))
case("einsum_ellipsis_batch", G, lambda a, b: es("...ij,...jk->...ik", a, b), R(2, 2, 3), R(2, 3, 2))
case("einsum_ellipsis_sum", G, lambda a: es("...i->...", a), R(2, 3))
case("einsum_ellipsis_implicit", G, lambda a: es("i...->...", a), R(3, 2))
case("einsum_three", G, lambda a, b, c: es("ij,jk,kl->il", a, b, c), R(2, 3), R(3, 3), R(3, 2))
case("einsum_four", G, lambda a, b, c, d: es("i,ij,jk,k->", a, b, c, d), R(2), R(2, 3), R(3, 2), R(2))
case("einsum_optimize", G, lambda a, b, c: es("ij,jk,kl->il", a, b, c, optimize=True), R(2, 3), R(3, 3), R(3, 2))
case("einsum_sublist", G, lambda a, b: es(a, [0, 1], b, [1, 2], [0, 2]), R(2, 3), R(3, 2))
case("einsum_sublist_implicit", G, lambda a, b: es(a, [0, 1], b, [1, 2]), R(2, 3), R(3, 2))
case("einsum_sublist_ellipsis", G, lambda a: es(a, [Ellipsis, 0, 0], [Ellipsis, 0]), R(2, 3, 3))
case("einsum_const_operand", G, lambda a: es("ij,j->i", a, np.arange(3.0)), R(2, 3))
case("einsum_same_operand", G, lambda a: es("ij,ij->", a, a), R(2, 3))
case("einsum_repeated_in_operand", G, lambda a, b, c: es("ijk,lji,lli->lki", a, b, c), R(3, 4, 4), R(4, 4, 3),
     R(4, 4, 3))
case("einsum_ellipsis_elementwise", G, lambda a, b: es("...,...->...", a, b), R(3, 2), R(3, 2))
case("einsum_bilinear", G, lambda x, a: es("i,ij,j", x, a, x), R(3), R(3, 3))

# ---- structural ------------------------------------------------------------------------------
G = "structural"
case("tril", G, np.tril, R(3, 3))
case("tril_k", G, lambda a: np.tril(a, -1), R(3, 4))
case("triu", G, np.triu, R(3, 3))
case("triu_k", G, lambda a: np.triu(a, k=1), R(4, 3))
case("triu_batched", G, np.triu, R(2, 3, 3))
case("diag_of_vector", G, lambda x: np.diag(x), R(3))
case("diag_of_vector_k", G, lambda x: np.diag(x, k=1) @ np.ones(4), R(3))
case("diag_of_matrix", G, lambda a: np.diag(a), R(3, 4))
case("diag_of_matrix_k", G, lambda a: np.diag(a, -1), R(3, 3))
case("diagflat", G, lambda x: np.diagflat(x), R(2, 2))
case("roll", G, lambda x: np.roll(x, 2) * np.arange(5.0), R(5))
case("roll_axis", G, lambda a: np.roll(a, -1, axis=1) * np.arange(4.0), R(3, 4))
case("roll_multi", G, lambda a: np.roll(a, (1, 2), axis=(0, 1)) * np.arange(12.0).reshape(3, 4), R(3, 4))
case("rot90", G, lambda a: np.rot90(a) * np.arange(6.0).reshape(3, 2), R(2, 3))
case("rot90_k", G, lambda a: np.rot90(a, 3, axes=(1, 2)), R(2, 2, 3))
case("split", G, lambda x: (lambda p, q: S(p ** 2) - S(q ** 3))(*np.split(x, 2)), R(6))
case("split_indices", G, lambda x: np.split(x, [1, 3])[1] ** 2, R(5))
case("split_axis", G, lambda a: S(np.split(a, 2, axis=1)[0] * 3) + S(np.split(a, 2, axis=1)[1] ** 2), R(3, 4))
case("array_split", G, lambda x: sum(S(p ** (i + 1)) for i, p in enumerate(np.array_split(x, 3))), R(7))
case("hsplit", G, lambda a: np.hsplit(a, 2)[1] ** 2, R(2, 4))
case("vsplit", G, lambda a: np.vsplit(a, 2)[0] * np.vsplit(a, 2)[1], R(4, 2))
case("dsplit", G, lambda a: np.dsplit(a, 2)[1] ** 2, R(2, 2, 4))
case("pad_constant", G, lambda x: np.pad(x, 2) * np.arange(7.0), R(3))
case("pad_constant_value", G, lambda a: np.pad(a, ((1, 0), (0, 2)), constant_values=1.5) ** 2, R(2, 2))
case("pad_edge", G, lambda x: np.pad(x, (2, 1), mode="edge") * np.arange(6.0), R(3))
case("pad_reflect", G, lambda x: np.pad(x, 2, mode="reflect") * np.arange(8.0), R(4))
case("pad_symmetric", G, lambda a: np.pad(a, 1, mode="symmetric") * np.arange(20.0).reshape(4, 5), R(2, 3))
case("pad_wrap", G, lambda x: np.pad(x, (1, 3), mode="wrap") * np.arange(7.0), R(3))
case("cross", G, np.cross, R(3), R(3))
case("cross_batched", G, lambda a, b: np.cross(a, b), R(4, 3), R(4, 3))
case("cross_axis", G, lambda a, b: np.cross(a, b, axis=0), R(3, 2), R(3, 2))
case("cross_broadcast", G, lambda a, b: np.cross(a, b), R(2, 3), R(3))
case("kron", G, np.kron, R(2, 2), R(2, 3))
case("kron_vector", G, lambda x, y: np.kron(x, y), R(3), R(2))
case("partition", G, lambda x: np.partition(x, 2) * np.arange(5.0), R(5))
case("partition_axis", G, lambda a: np.partition(a, 1, axis=0)[1], R(3, 4))
case("select", G, lambda x: np.select([x < -0.5, x > 0.5], [x ** 2, np.sin(x)], default=x * 3), R(6))
case("select_default_array", G, lambda x, y: np.select([x > 0], [x * y], y ** 2), R(5), R(5))
case("linspace", G, lambda a, b: np.linspace(a, b, 5) ** 2, np.array(0.3), np.array(1.7))
case("linspace_array_ends", G, lambda a, b: np.linspace(a, b, 4, axis=-1) ** 2, R(2), R(2))
case("linspace_endpoint", G, lambda b: S(np.sin(np.linspace(0.0, b, 6, endpoint=False))), np.array(2.0))
case("gradient_1d", G, lambda x: np.gradient(x) ** 2, R(6))
case("gradient_spacing", G, lambda x: np.gradient(x, 0.5) * np.arange(5.0), R(5))
case("gradient_axis", G, lambda a: np.gradient(a, axis=1) ** 2, R(3, 4))
case("gradient_2d", G, lambda a: (lambda gy, gx: S(gy ** 2) + S(gx * 2))(*np.gradient(a)), R(3, 4))
case("gradient_edge_order", G, lambda x: np.gradient(x, edge_order=2) ** 2, R(5))
case("gradient_coords", G, lambda x: np.gradient(x, np.array([0.0, 0.5, 1.5, 2.0, 3.5])) ** 2, R(5))
case("fliplr", G, lambda a: np.fliplr(a) * np.arange(6.0).reshape(2, 3), R(2, 3))
case("flipud", G, lambda a: np.flipud(a) * np.arange(6.0).reshape(3, 2), R(3, 2))
case("flip_axis", G, lambda a: np.flip(a, axis=1) * np.arange(6.0).reshape(2, 3), R(2, 3))
case("rollaxis", G, lambda a: np.rollaxis(a, 2) * np.arange(4.0)[:, None, None], R(2, 3, 4))
case("rollaxis_start", G, lambda a: np.rollaxis(a, 0, 3).ravel() * np.arange(24.0), R(2, 3, 4))
case("moveaxis", G, lambda a: np.moveaxis(a, 0, -1) * np.arange(2.0), R(2, 3, 2))
case("swapaxes", G, lambda a: np.swapaxes(a, 0, 2) * np.arange(2.0), R(2, 3, 2))
case("tile", G, lambda x: np.tile(x, (2, 2)) * np.arange(12.0).reshape(2, 6), R(3))
case("repeat", G, lambda x: np.repeat(x, [1, 2, 3]) * np.arange(6.0), R(3))
case("take", G, lambda x: np.take(x, [2, 0, 2]) ** 2, R(3))
case("fancy_index", G, lambda a: a[[0, 2, 2], [1, 0, 1]] ** 2, R(3, 2))
case("boolean_index", G, lambda x: S(x[x > 0] ** 2), R(6))
case("concatenate_axis", G, lambda a, b: np.concatenate([a, b], axis=1) ** 2, R(2, 2), R(2, 3))
case("stack_axis", G, lambda a, b: np.stack([a, b], axis=-1) * np.array([1.0, 2.0]), R(3), R(3))
case("diff", G, lambda x: np.diff(x, n=2) ** 2, R(5))
case("sort", G, lambda x: np.sort(x) * np.arange(5.0), R(5))
case("trace_offset", G, lambda a: np.trace(a, offset=1), R(3, 3))
case("outer", G, np.outer, R(3), R(2))
case("tensordot_axes", G, lambda a, b: np.tensordot(a, b, axes=([1, 2], [0, 1])), R(2, 3, 2), R(3, 2, 2))
case("where_mask", G, lambda x: np.where(x > 0, np.sqrt(np.abs(x)), x ** 2), R(6))
case("clip", G, lambda x: np.clip(x, -0.5, 0.5) ** 2, np.array([-1.2, -0.3, 0.1, 0.9, 0.4]))

# ---- reductions and elementwise --------------------------------------------------------------
G = "reductions"
NANMASK = np.array([False, True, False, False, True, False])
NANMASK2 = np.array([[False, True, False], [False, False, True]])


def with_nans(x: Any, mask: np.ndarray = NANMASK) -> Any:
    return np.where(mask, np.nan, x)


case("average", G, np.average, R(5))
case("average_weights", G, lambda x, w: np.average(x, weights=w), R(4), U(4))
case("average_const_weights", G, lambda x: np.average(x, weights=np.arange(1.0, 5.0)), R(4))
case("average_axis", G, lambda a, w: np.average(a, axis=1, weights=w), R(3, 4), U(4))
case("average_returned", G, lambda x, w: (lambda avg, tot: avg * tot)(*np.average(x, weights=w, returned=True)),
     R(4), U(4))
case("nansum", G, lambda x: np.nansum(with_nans(x) ** 2), R(6))
case("nansum_axis", G, lambda a: np.nansum(with_nans(a, NANMASK2), axis=1), R(2, 3))
case("nanmean", G, lambda x: np.nanmean(np.exp(with_nans(x))), R(6))
case("nanmean_axis", G, lambda a: np.nanmean(with_nans(a, NANMASK2), axis=0), R(2, 3))
case("nanmax", G, lambda x: np.nanmax(with_nans(x)), R(6))
case("nanmax_axis", G, lambda a: np.nanmax(with_nans(a, NANMASK2), axis=1), R(2, 3))
case("nanmin", G, lambda x: np.nanmin(with_nans(x)), R(6))
case("nanprod", G, lambda x: np.nanprod(with_nans(x)), R(6))
case("nanprod_axis", G, lambda a: np.nanprod(with_nans(a, NANMASK2), axis=1), R(2, 3))
case("nanstd", G, lambda x: np.nanstd(with_nans(x)), R(6))
case("nanstd_ddof", G, lambda x: np.nanstd(with_nans(x), ddof=1), R(6))
case("nanvar", G, lambda x: np.nanvar(with_nans(x)), R(6))
case("nanvar_axis", G, lambda a: np.nanvar(with_nans(a, NANMASK2), axis=1), R(2, 3))
case("nancumsum", G, lambda x: np.nancumsum(with_nans(x)) ** 2, R(6))
case("nancumprod", G, lambda x: np.nancumprod(with_nans(x)), U(6))
case("nanmax_ties", G, lambda x: np.nanmax(with_nans(x)), np.array([1.0, 5.0, 2.0, 2.0, 0.0, 1.0]))
case("ptp_ties", G, np.ptp, np.array([1.0, 3.0, 3.0, 1.0, 2.0]))
case("median_ties", G, np.median, np.array([1.0, 2.0, 2.0, 4.0]))
case("partition_ties", G, lambda x: np.partition(x, 1) * np.arange(4.0), np.array([2.0, 1.0, 1.0, 3.0]))
case("sinc_negative", G, np.sinc, np.array([-2.5, -0.3, -1.0]))
case("nancumsum_axis", G, lambda a: np.nancumsum(with_nans(a, NANMASK2), axis=1) ** 2, R(2, 3))
case("ptp", G, np.ptp, R(5))
case("ptp_axis", G, lambda a: np.ptp(a, axis=0), R(3, 4))
case("max_ties_split", G, lambda x: np.max(x), np.array([1.0, 3.0, 0.5]))
case("prod_with_zero", G, np.prod, np.array([2.0, 0.0, 3.0, -1.0]))
case("cumprod", G, lambda x: np.cumprod(x), R(4))
case("std_axis", G, lambda a: np.std(a, axis=1), R(3, 4))
case("var_ddof", G, lambda x: np.var(x, ddof=1), R(5))
case("logaddexp_reduce", G, lambda x: np.logaddexp.reduce(x), R(4))
case("logaddexp_reduce_axis", G, lambda a: np.logaddexp.reduce(a, axis=1), R(3, 4))
case("logaddexp2_reduce", G, lambda x: np.logaddexp2.reduce(x), R(4))
G = "elementwise"
case("copysign", G, lambda x: np.copysign(x, -1.0) * x, R(5))
case("copysign_array", G, lambda x: np.copysign(x ** 2 + 1, np.array([1.0, -1.0, 2.0, -3.0])), R(4))
case("copysign_sign_arg", G, lambda x, y: np.copysign(x, y), U(3), R(3))
case("heaviside", G, lambda x: np.heaviside(x, 0.5) * x ** 2, R(6))
case("heaviside_at_zero", G, lambda x: np.heaviside(x - 10.0, 1.0) + x, np.array([0.0, 1.0]))
case("sinc", G, np.sinc, R(5))
case("sinc_at_zero", G, lambda x: np.sinc(x), np.array([0.0, 0.5, -1.5]))
case("nan_to_num", G, lambda x: np.nan_to_num(np.log(x)), np.array([0.5, 0.0, 2.0]))
case("nan_to_num_values", G, lambda x: np.nan_to_num(x / np.array([1.0, 0.0, 2.0]), posinf=5.0, neginf=-5.0),
     np.array([0.5, -1.0, 2.0]))
case("nan_to_num_nan", G, lambda x: np.nan_to_num(with_nans(x), nan=2.0) ** 2, R(6))
case("hypot", G, np.hypot, R(4), R(4))
case("arctan2", G, np.arctan2, R(4), U(4))
case("logaddexp", G, np.logaddexp, R(4), R(4))
case("logaddexp2", G, np.logaddexp2, R(4), R(4))
case("expm1_log1p", G, lambda x: np.log1p(np.expm1(x)), U(4))
case("cbrt", G, np.cbrt, U(4))
case("square_reciprocal", G, lambda x: np.reciprocal(np.square(x)), U(4))
case("fmax_fmin", G, lambda x, y: np.fmax(x, y) + np.fmin(x, y) ** 2, R(4), R(4) + 3)
case("maximum", G, lambda x: np.maximum(x, 0.0) ** 2, R(6))
case("sinh_cosh_tanh", G, lambda x: np.sinh(x) * np.cosh(x) + np.tanh(x), R(4))
case("arcsinh_arccosh", G, lambda x: np.arcsinh(x) + np.arccosh(x + 1), U(4))
case("arcsin_arccos_arctan", G, lambda x: np.arcsin(x) + np.arccos(x) * np.arctan(x), U(4, lo=-0.8, hi=0.8))
case("log2_log10", G, lambda x: np.log2(x) + np.log10(x), U(4))
case("exp2", G, np.exp2, R(4))
case("float_power", G, lambda x: np.float_power(x, 2.5), U(4))
case("power_array_exponent", G, lambda x, p: x ** p, U(4), R(4))
case("deg2rad", G, lambda x: np.sin(np.deg2rad(x)), R(4) * 90)

G = "more"
XP = np.array([0.0, 0.5, 1.5, 2.0, 3.0])
case("ldexp", G, lambda x: np.ldexp(x, 3), R(4))
case("convolve", G, lambda a, v: np.convolve(a, v), R(5), R(3))
case("convolve_same", G, lambda a, v: np.convolve(a, v, mode="same"), R(5), R(3))
case("convolve_valid_long_v", G, lambda a, v: np.convolve(a, v, "valid"), R(3), R(5))
case("correlate", G, lambda a, v: np.correlate(a, v), R(5), R(3))
case("correlate_full", G, lambda a, v: np.correlate(a, v, "full"), R(4), R(2))
case("trapezoid", G, lambda y: np.trapezoid(y), R(5))
case("trapezoid_x", G, lambda y, x: np.trapezoid(y, x), R(5), np.cumsum(U(5)))
case("trapezoid_axis", G, lambda y: np.trapezoid(y, dx=0.5, axis=0), R(4, 3))
case("interp", G, lambda x, fp: np.interp(x, XP, fp), np.array([-0.5, 0.2, 1.1, 2.7, 3.5]), R(5))
case("cov", G, np.cov, R(3, 5))
case("cov_rowvar", G, lambda a: np.cov(a, rowvar=False, bias=True), R(5, 2))
case("corrcoef", G, np.corrcoef, R(3, 5))
case("quantile", G, lambda x: np.quantile(x, 0.3), R(7))
case("quantile_vector_q", G, lambda x: np.quantile(x, [0.1, 0.75]), R(6))
case("percentile_axis", G, lambda a: np.percentile(a, 40, axis=1), R(3, 5))
case("median", G, np.median, R(7))
case("median_even", G, lambda a: np.median(a, axis=0), R(4, 3))
case("polyval", G, lambda p, x: np.polyval(p, x), R(4), R(3))
case("vander", G, lambda x: np.vander(x, 4), R(3))
case("meshgrid", G, lambda x, y: (lambda X, Y: X * Y ** 2)(*np.meshgrid(x, y)), R(3), R(2))
case("meshgrid_ij", G, lambda x, y: np.meshgrid(x, y, indexing="ij")[1] * np.arange(6.0).reshape(3, 2), R(3), R(2))
case("delete", G, lambda x: np.delete(x, [0, 2]) ** 2, R(5))
case("delete_axis", G, lambda a: np.delete(a, 1, axis=1) ** 2, R(3, 3))
case("insert", G, lambda x, v: np.insert(x, 2, v) * np.arange(6.0), R(4), R(2))
case("insert_scalar", G, lambda x: np.insert(x, [1, 3], 0.5) * np.arange(6.0), R(4))
case("compress", G, lambda x: np.compress([True, False, True, True], x) ** 2, R(4))
case("extract", G, lambda x: np.extract(x > 0, x) ** 2, R(6))
case("choose", G, lambda x, y: np.choose([0, 1, 1, 0], [x, y]) ** 2, R(4), R(4))
case("resize", G, lambda x: np.resize(x, (2, 4)) * np.arange(8.0).reshape(2, 4), R(3))
case("ediff1d", G, lambda x: np.ediff1d(x, to_begin=1.0) ** 2, R(5))
case("block", G, lambda a, b: np.block([[a, b], [b, a]]) * np.arange(16.0).reshape(4, 4), R(2, 2), R(2, 2))
case("vector_norm", G, lambda a: np.linalg.vector_norm(a, axis=(0, 1)), R(2, 3))
case("matrix_norm", G, lambda a: np.linalg.matrix_norm(a), R(2, 3, 3))
case("vecdot", G, lambda x, y: np.vecdot(x, y), R(2, 3), R(2, 3))
case("cumulative_sum", G, lambda x: np.cumulative_sum(x, include_initial=True) ** 2, R(4))
case("i0_numpy", G, lambda x: np.i0(x), R(4), scipy=True)
case("cond", G, np.linalg.cond, WELL(3, 3))
case("cond_fro", G, lambda a: np.linalg.cond(a, "fro"), SPD(3))
case("lstsq", G, lambda a, b: np.linalg.lstsq(a, b)[0], WELL(4, 2), R(4))
case("lstsq_residuals", G, lambda a, b: np.linalg.lstsq(a, b)[1], WELL(4, 2), R(4, 2))
case("tensorinv", G, lambda a: np.linalg.tensorinv(a, ind=1), SPD(4).reshape(4, 2, 2))
case("tensorsolve", G, lambda a, b: np.linalg.tensorsolve(a, b), SPD(4).reshape(2, 2, 4), R(2, 2))
case("multiply_outer", G, lambda x, y: np.multiply.outer(x, y), R(3), R(2))
case("subtract_outer", G, lambda x: np.subtract.outer(x, x) ** 2, R(3))
case("imag_real", G, lambda x: np.imag(x) + np.real(x) ** 2, R(3))
case("add_outer", G, lambda x, y: np.add.outer(x, y) ** 2, R(3), R(2))
case("divide_outer", G, lambda x, y: np.divide.outer(x, y), R(3), U(2))
case("power_outer", G, lambda x, y: np.power.outer(x, y), U(3), R(2))
case("hypot_outer", G, lambda x, y: np.hypot.outer(x, y), R(3), R(2))
case("maximum_outer", G, lambda x, y: np.maximum.outer(x, y), R(3), R(2))
case("angle_real", G, lambda x: np.angle(x) + x, R(4))

G = "methods"
case("real_imag_conj", G, lambda a: a.real * 2 + a.imag + a.conj() ** 2, R(3, 3))
case("diagonal_method", G, lambda a: a.diagonal(1), R(3, 3))
case("take_method", G, lambda a: a.take([0, 4, 4]) ** 2, R(3, 3))
case("method_chain", G, lambda a: a.T.dot(a).sum(axis=0).cumsum().max(), R(3, 2))
case("std_var_methods", G, lambda a: a.std(axis=0) + a.var(ddof=1), R(4, 2))

# ---- scipy.special -------------------------------------------------------------------------
G = "special"


def special(name: str) -> Any:
    import scipy.special
    return getattr(scipy.special, name)


def sp(label: str, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    case(label, G, f, *args, scipy=True, **kwargs)


sp("gammaln", lambda x: special("gammaln")(x), U(5, lo=0.3, hi=5.0))
sp("gammaln_negative", lambda x: special("gammaln")(x), np.array([-0.5, -1.5, -2.3]))
sp("digamma", lambda x: special("digamma")(x), U(5, lo=0.3, hi=5.0))
sp("psi", lambda x: special("psi")(x), U(4, lo=0.5, hi=4.0))
sp("polygamma_1", lambda x: special("polygamma")(1, x), U(4, lo=0.5, hi=4.0))
sp("polygamma_array_n", lambda x: special("polygamma")(np.array([0, 1, 2]), x), U(3, lo=0.5, hi=4.0))
sp("gamma", lambda x: special("gamma")(x), U(4, lo=0.5, hi=3.0))
sp("gamma_negative", lambda x: special("gamma")(x), np.array([-0.5, -1.3]))
sp("loggamma", lambda x: special("loggamma")(x), U(4, lo=0.5, hi=4.0))
sp("beta", lambda a, b: special("beta")(a, b), U(3, lo=0.5, hi=3.0), U(3, lo=0.5, hi=3.0))
sp("betaln", lambda a, b: special("betaln")(a, b), U(3, lo=0.5, hi=3.0), U(3, lo=0.5, hi=3.0))
sp("erf", lambda x: special("erf")(x), R(5))
sp("erfc", lambda x: special("erfc")(x), R(5))
sp("erfinv", lambda x: special("erfinv")(x), U(5, lo=-0.9, hi=0.9))
sp("erfcinv", lambda x: special("erfcinv")(x), U(5, lo=0.1, hi=1.9))
sp("expit", lambda x: special("expit")(x), R(5) * 3)
sp("logit", lambda x: special("logit")(x), U(5, lo=0.05, hi=0.95))
sp("expit_logit", lambda x: special("logit")(special("expit")(x)) ** 2, R(4))
sp("xlogy", lambda x, y: special("xlogy")(x, y), R(4), U(4))
sp("xlogy_zero_x", lambda y: special("xlogy")(np.zeros(3), y) + y, U(3))
sp("xlog1py", lambda x, y: special("xlog1py")(x, y), R(4), U(4))
sp("ndtr", lambda x: special("ndtr")(x), R(5))
sp("log_ndtr", lambda x: special("log_ndtr")(x), R(5) * 3)
sp("log_ndtr_tail", lambda x: special("log_ndtr")(x), np.array([-10.0, -25.0, 8.0]))
sp("ndtri", lambda p: special("ndtri")(p), U(5, lo=0.05, hi=0.95))
sp("i0", lambda x: special("i0")(x), R(5))
sp("i1", lambda x: special("i1")(x), R(5))
sp("i0e", lambda x: special("i0e")(x), R(5) + 0.05)
sp("i1e", lambda x: special("i1e")(x), R(5) + 0.05)
sp("iv", lambda x: special("iv")(1.5, x), U(4, lo=0.3, hi=4.0))
sp("iv_int_order", lambda x: special("iv")(2, x), R(4))
sp("ive", lambda x: special("ive")(0.5, x), U(4, lo=0.3, hi=4.0))
sp("jv", lambda x: special("jv")(2.5, x), U(4, lo=0.3, hi=6.0))
sp("jv_zero_order", lambda x: special("jv")(0, x), R(4))
sp("yv", lambda x: special("yv")(1.0, x), U(4, lo=0.5, hi=6.0))
sp("kv", lambda x: special("kv")(0.5, x), U(4, lo=0.3, hi=4.0))
sp("spherical_jn", lambda x: special("spherical_jn")(2, x), U(4, lo=0.3, hi=5.0))
sp("kve", lambda x: special("kve")(1.5, x), U(4, lo=0.3, hi=4.0))
sp("log_expit", lambda x: special("log_expit")(x), R(5) * 3)
sp("erfcx", lambda x: special("erfcx")(x), R(5))
sp("j0_j1", lambda x: special("j0")(x) * special("j1")(x), U(4, lo=0.3, hi=6.0))
sp("y0_y1", lambda x: special("y0")(x) + special("y1")(x), U(4, lo=0.5, hi=6.0))
sp("jn", lambda x: special("jn")(3, x), U(4, lo=0.3, hi=6.0))
sp("yn", lambda x: special("yn")(2, x), U(4, lo=0.5, hi=6.0))
sp("rgamma", lambda x: special("rgamma")(x), U(4, lo=0.3, hi=4.0))
sp("gammasgn", lambda x: special("gammasgn")(x) * x, np.array([-0.5, 1.5, 2.5]))
sp("gammainc", lambda x: special("gammainc")(2.5, x), U(4, lo=0.3, hi=4.0))
sp("gammaincc", lambda x: special("gammaincc")(1.5, x), U(4, lo=0.3, hi=4.0))
sp("betainc", lambda x: special("betainc")(2.0, 3.0, x), U(4, lo=0.1, hi=0.9))
sp("stdtr", lambda t: special("stdtr")(4.0, t), R(4))
sp("pdtr", lambda m: special("pdtr")(3, m), U(4, lo=0.5, hi=5.0))
sp("multigammaln", lambda a: special("multigammaln")(a, 3), np.array(2.7))
sp("entr", lambda x: special("entr")(x), U(4, lo=0.1, hi=2.0))
sp("rel_entr", lambda x, y: special("rel_entr")(x, y), U(4), U(4))
sp("kl_div", lambda x, y: special("kl_div")(x, y), U(4), U(4))
sp("logsumexp", lambda x: special("logsumexp")(x), R(5))
sp("logsumexp_axis", lambda a: special("logsumexp")(a, axis=1), R(3, 4))
sp("logsumexp_keepdims", lambda a: a - special("logsumexp")(a, axis=0, keepdims=True), R(3, 2))
sp("logsumexp_b", lambda x, b: special("logsumexp")(x, b=b), R(4), U(4))
sp("logsumexp_large", lambda x: special("logsumexp")(x), R(4) + 800.0)
sp("softmax", lambda x: special("softmax")(x), R(5))
sp("softmax_axis", lambda a: special("softmax")(a, axis=1), R(3, 4))
sp("log_softmax", lambda x: special("log_softmax")(x), R(5))
sp("log_softmax_axis", lambda a: special("log_softmax")(a, axis=0), R(3, 2))

def slinalg(name: str) -> Any:
    import scipy.linalg
    return getattr(scipy.linalg, name)


def signal(name: str) -> Any:
    import scipy.signal
    return getattr(scipy.signal, name)


G = "scipy_linalg"
sp("sl_solve_triangular", lambda a, b: slinalg("solve_triangular")(a, b, lower=True), SPD(3), R(3))
sp("sl_solve_triangular_upper_T", lambda a, b: slinalg("solve_triangular")(a, b, trans="T"), SPD(3), R(3, 2))
sp("sl_solve_triangular_unit", lambda a, b: slinalg("solve_triangular")(a, b, lower=True, unit_diagonal=True),
   R(3, 3), R(3))
sp("sl_cholesky", lambda a: slinalg("cholesky")(a), SPD(3))
sp("sl_cholesky_lower", lambda a: slinalg("cholesky")(a, lower=True), SPD(3))
sp("sl_cho_solve", lambda a, b: slinalg("cho_solve")((slinalg("cholesky")(a, lower=True), True), b), SPD(3), R(3))
sp("sl_inv", lambda a: slinalg("inv")(a), SPD(3))
sp("sl_det", lambda a: slinalg("det")(a), R(3, 3))
sp("sl_solve", lambda a, b: slinalg("solve")(a, b), R(3, 3) + 3 * np.eye(3), R(3))
sp("sl_eigh", lambda a: slinalg("eigh")(a, eigvals_only=True), SYM(3))
sp("sl_eigh_vectors", lambda a: np.abs(slinalg("eigh")(a)[1]), SYM(3))
sp("sl_eigh_vectors_signed", lambda a: slinalg("eigh")(a)[1] * slinalg("eigh")(a)[1][:1], SYM(3))
sp("sl_svd", lambda a: slinalg("svd")(a, compute_uv=False), WELL(3, 4))
sp("sl_svd_vectors", lambda a: slinalg("svd")(a, full_matrices=False)[0] * slinalg("svd")(a, full_matrices=False)[2][:, :1].T,
   WELL(3, 4))
sp("sl_svd_reconstruct", lambda a: (lambda u, s, vt: u * s @ vt)(*slinalg("svd")(a, full_matrices=False)), WELL(4, 3))
sp("sl_qr_q", lambda a: slinalg("qr")(a, mode="economic")[0], R(4, 3))
sp("sl_qr_square_r", lambda a: slinalg("qr")(a, mode="r")[0], R(3, 3))
sp("sl_qr_economic", lambda a: slinalg("qr")(a, mode="economic")[1], R(4, 3))
sp("sl_expm", lambda a: slinalg("expm")(a), R(3, 3))
sp("sl_expm_large", lambda a: slinalg("expm")(a), 3.0 * R(3, 3))
sp("sl_expm_symmetric", lambda a: np.trace(slinalg("expm")(a)), SYM(3))
sp("sl_solve_sylvester", lambda a, b, q: slinalg("solve_sylvester")(a, b, q), SPD(3), SPD(3), R(3, 3))
sp("sl_solve_sylvester_rect", lambda a, b, q: slinalg("solve_sylvester")(a, b, q), SPD(2), SPD(3), R(2, 3))
sp("sl_sqrtm", lambda a: slinalg("sqrtm")(a), SPD(3))
sp("signal_convolve", lambda a, v: signal("convolve")(a, v), R(5), R(3))
sp("signal_convolve_2d", lambda a, v: signal("convolve")(a, v), R(3, 4), R(2, 2))
sp("signal_convolve_same", lambda a, v: signal("convolve")(a, v, mode="same"), R(4, 4), R(3, 2))
sp("signal_convolve_valid", lambda a, v: signal("convolve")(a, v, mode="valid"), R(4, 4), R(2, 3))
sp("signal_correlate", lambda a, v: signal("correlate")(a, v), R(3, 4), R(2, 2))
sp("signal_convolve2d", lambda a, v: signal("convolve2d")(a, v, mode="same"), R(4, 3), R(2, 2))

# filters as signal-processing code calls them: coefficients from scipy.signal's designs
G = "signal"
BUTTER_B = np.array([0.09853116, 0.29559348, 0.29559348, 0.09853116])  # butter(3, 0.3)
BUTTER_A = np.array([1.0, -0.57724052, 0.42178705, -0.05629724])
SOS = np.array([[0.00482434, 0.00964869, 0.00482434, 1.0, -1.04859958, 0.29614036],
                [1.0, 2.0, 1.0, 1.0, -1.32091343, 0.63273879]])  # butter(4, 0.2, output="sos")
sp("lfilter", lambda x: signal("lfilter")(BUTTER_B, BUTTER_A, x) ** 2, R(12))
sp("lfilter_axis0", lambda x: np.sin(signal("lfilter")([1.0, 0.5], [1.0, -0.8], x, axis=0)), R(10, 3))
sp("lfilter_fir", lambda x: np.sum(signal("lfilter")(np.ones(3) / 3, 1.0, x) ** 2), R(9))
sp("lfilter_in_b", lambda b: signal("lfilter")(b, BUTTER_A, np.linspace(-1.0, 1.0, 10)) ** 2, R(3))
sp("lfilter_in_a", lambda a: signal("lfilter")([1.0, 0.3], np.r_[1.0, a], np.cos(np.arange(10.0))) ** 2,
   np.array([-0.5, 0.2]))
sp("lfilter_in_b_a_x", lambda b, a, x: np.tanh(signal("lfilter")(b, a, x)), np.array([0.5, 0.25]),
   np.array([1.2, -0.4]), R(8))
sp("lfilter_zi", lambda x: signal("lfilter")(BUTTER_B, BUTTER_A, x,
                                             zi=signal("lfilter_zi")(BUTTER_B, BUTTER_A) * x[0])[0] ** 2, R(10))
sp("lfilter_zf", lambda x, z: np.exp(signal("lfilter")([1.0, 2.0, 1.0], [2.0, 0.5, 0.1], x, zi=z)[1]), R(6),
   R(2))
sp("filtfilt", lambda x: signal("filtfilt")(BUTTER_B, BUTTER_A, x) ** 2, R(20))
sp("filtfilt_gust_2d", lambda x: np.sin(signal("filtfilt")([1.0, 0.4], [1.0, -0.3], x, axis=0, method="gust")),
   R(8, 2))
sp("sosfilt", lambda x: signal("sosfilt")(SOS, x) ** 2, R(3, 10))
sp("sosfilt_zi", lambda x: signal("sosfilt")(SOS, x, zi=signal("sosfilt_zi")(SOS) * x[0])[0] ** 2, R(10))
sp("sosfiltfilt", lambda x: np.sin(signal("sosfiltfilt")(SOS, x, padlen=6)), R(12))
sp("savgol_filter", lambda x: signal("savgol_filter")(x, 5, 2) ** 2, R(11))
sp("savgol_filter_deriv", lambda x: np.sin(signal("savgol_filter")(x, 7, 3, deriv=1, delta=0.1, mode="nearest",
                                                                   axis=0)), R(9, 2))
sp("detrend", lambda x: signal("detrend")(x) ** 2, R(3, 8))
sp("detrend_constant_bp", lambda x: np.sin(signal("detrend")(x, bp=[3, 6]) + signal("detrend")(x, type="constant")),
   R(10))
sp("fftconvolve", lambda a, v: signal("fftconvolve")(a, v, mode="same") ** 2, R(4, 5), R(2, 3))
sp("oaconvolve", lambda a, v: np.sin(signal("oaconvolve")(a, v)), R(12), R(4))

G = "ndimage"


def ndimage(name: str) -> Any:
    import scipy.ndimage
    return getattr(scipy.ndimage, name)


KERNEL = np.array([[1.0, 2.0, 0.5], [-1.0, 0.25, 3.0]])
sp("nd_gaussian_filter", lambda x: ndimage("gaussian_filter")(x, 1.0) ** 2, R(6, 7))
sp("nd_gaussian_filter_modes", lambda x: np.sin(ndimage("gaussian_filter")(x, (0.8, 1.5), mode=("nearest", "wrap"),
                                                                          order=(0, 1))), R(5, 6))
sp("nd_gaussian_filter_constant", lambda x: ndimage("gaussian_filter")(x, 1.2, mode="constant", cval=2.0) ** 2,
   R(7))
sp("nd_gaussian_filter1d", lambda x: np.sin(ndimage("gaussian_filter1d")(x, 1.5, axis=0, mode="mirror")), R(8, 2))
sp("nd_uniform_filter", lambda x: ndimage("uniform_filter")(x, size=3, mode="reflect") ** 2, R(6, 5))
sp("nd_uniform_filter1d", lambda x: np.sin(ndimage("uniform_filter1d")(x, 4, mode="wrap", origin=1)), R(9))
for _mode in ("reflect", "mirror", "nearest", "wrap", "constant"):
    sp(f"nd_correlate_{_mode}", lambda x, _m=_mode: ndimage("correlate")(x, KERNEL, mode=_m, cval=0.5) ** 2,
       R(5, 6))
sp("nd_convolve_origin", lambda x: np.sin(ndimage("convolve")(x, KERNEL.T, origin=(0, -1))), R(6, 5))
sp("nd_correlate1d", lambda x: ndimage("correlate1d")(x, [1.0, -2.0, 0.5, 3.0], axis=0) ** 2, R(7, 3))
COORDS = np.array([[-1.3, 0.2, 1.7, 3.9, 4.6, 2.5], [0.4, -0.7, 5.6, 2.2, 1.1, 4.8]])
for _mode in ("constant", "nearest", "mirror", "reflect", "wrap", "grid-wrap", "grid-constant"):
    sp(f"nd_map_coordinates_{_mode}", lambda x, c, _m=_mode: np.sin(ndimage("map_coordinates")(x, c, order=1, mode=_m,
                                                                                                cval=0.5)),
       R(5, 6), COORDS.copy())
sp("nd_zoom_linear", lambda x: ndimage("zoom")(x, (1.5, 0.7), order=1) ** 2, R(5, 6))
sp("nd_zoom_cubic_nearest", lambda x: np.sin(ndimage("zoom")(x, 1.6, order=3, mode="nearest")), R(7))
sp("nd_zoom_grid_mode", lambda x: np.sin(ndimage("zoom")(x, 2.0, order=1, mode="grid-constant", grid_mode=True)),
   R(4, 3))
sp("nd_convolve1d", lambda x: np.sin(ndimage("convolve1d")(x, [1.0, 2.0], mode="nearest")), R(8))

G = "fft"


def sfft(name: str) -> Any:
    import scipy.fft
    return getattr(scipy.fft, name)


sp("dct_ortho", lambda x: sfft("dct")(x, norm="ortho") ** 2, R(8))
sp("idct_type3", lambda x: np.sin(sfft("idct")(x, type=3, axis=0)), R(6, 2))
sp("dst_type1_n", lambda x: sfft("dst")(x, type=1, n=9) ** 2, R(7))
sp("idst_type4", lambda x: np.sin(sfft("idst")(x, type=4)), R(3, 5))
sp("dct_roundtrip", lambda x: np.sum(sfft("idct")(sfft("dct")(x) * np.arange(6.0)) ** 2), R(6))

G = "interpolate"


def interpolate(name: str) -> Any:
    import scipy.interpolate
    return getattr(scipy.interpolate, name)


KNOTS = np.linspace(0.0, 2.0, 9)
QUERY = np.array([0.13, 0.5, 0.77, 1.6, 1.95])
sp("cubic_spline_in_y", lambda y: interpolate("CubicSpline")(KNOTS, y)(QUERY) ** 2, R(9))
sp("cubic_spline_natural_2d", lambda y: np.sin(interpolate("CubicSpline")(KNOTS, y, bc_type="natural")(QUERY)), R(9, 2))
sp("cubic_spline_clamped", lambda y: interpolate("CubicSpline")(KNOTS, y, bc_type=((1, 2.0), (2, -1.0)))(QUERY) ** 2,
   R(9))
sp("cubic_spline_at_points", lambda q: np.sin(interpolate("CubicSpline")(KNOTS, np.cos(3 * KNOTS))(q)), QUERY.copy())
sp("cubic_spline_y_and_points", lambda y, q: interpolate("CubicSpline")(KNOTS, y)(q) ** 2, R(9), QUERY.copy())
sp("cubic_spline_derivative", lambda y: np.sin(interpolate("CubicSpline")(KNOTS, y).derivative()(QUERY)), R(9))
sp("cubic_spline_integrate", lambda y: interpolate("CubicSpline")(KNOTS, y).integrate(0.1, 1.7) ** 2, R(9))
sp("make_interp_spline_in_y", lambda y: np.sin(interpolate("make_interp_spline")(KNOTS, y, k=3)(QUERY)), R(9))
sp("make_interp_spline_k5_points", lambda y, q: interpolate("make_interp_spline")(KNOTS, y, k=5)(q) ** 2, R(9),
   QUERY.copy())
sp("bspline_derivative_at_points", lambda q: np.sin(interpolate("make_interp_spline")(KNOTS, KNOTS ** 3)
                                                    .derivative()(q)), QUERY.copy())
sp("pchip_at_points", lambda q: interpolate("PchipInterpolator")(KNOTS, np.sin(KNOTS))(q) ** 2, QUERY.copy())
case("interp_in_xp", G, lambda xp: np.interp(QUERY, xp, np.sin(KNOTS)) ** 2, KNOTS + 0.01 * np.sin(KNOTS))
case("interp_in_all", G, lambda x, xp, fp: np.sin(np.interp(x, xp, fp, left=fp[1], right=2.0 * fp[-1])),
     np.r_[-0.5, QUERY + 0.03, 2.5], KNOTS.copy(), R(9))
sp("interp1d_in_y", lambda y: np.sin(interpolate("interp1d")(KNOTS, y)(QUERY)), R(9))
sp("interp1d_cubic_fill", lambda y: interpolate("interp1d")(KNOTS, y, kind="cubic", bounds_error=False,
                                                            fill_value=3.0)(np.r_[QUERY, 4.0]) ** 2, R(9))

# ---- scipy.stats -----------------------------------------------------------------------------
G = "stats"


def stats(name: str) -> Any:
    import scipy.stats
    return getattr(scipy.stats, name)


def st(label: str, f: Callable[..., Any], *args: Any) -> None:
    case(label, G, f, *args, scipy=True)


st("norm_logpdf", lambda x: stats("norm").logpdf(x), R(5))
st("norm_logpdf_loc_scale", lambda x, m, s: stats("norm").logpdf(x, m, s), R(4), R(4), U(4))
st("norm_logpdf_kw", lambda x, m, s: stats("norm").logpdf(x, loc=m, scale=s), R(4), np.array(0.3), np.array(1.4))
st("norm_pdf", lambda x, s: stats("norm").pdf(x, scale=s), R(4), U(4))
st("norm_cdf", lambda x, m: stats("norm").cdf(x, m), R(4), R(4))
st("norm_logcdf", lambda x, m, s: stats("norm").logcdf(x, m, s), R(4), R(4), U(4))
st("mvn_logpdf", lambda x, m: stats("multivariate_normal").logpdf(x, m, SPD_CONST), R(3), R(3))
st("mvn_logpdf_cov", lambda x, c: stats("multivariate_normal").logpdf(x, np.zeros(3), c), R(3), SPD(3))
st("mvn_logpdf_batch", lambda x, m, c: S(stats("multivariate_normal").logpdf(x, mean=m, cov=c)),
   R(4, 2), R(2), SPD(2))
st("norm_sf", lambda x, m, s: stats("norm").sf(x, m, s), R(4), R(4), U(4))
st("norm_logsf", lambda x, m, s: stats("norm").logsf(x, m, s), R(4), R(4), U(4))
st("norm_ppf", lambda q, m, s: stats("norm").ppf(q, m, s), U(4, lo=0.05, hi=0.95), R(4), U(4))
st("norm_isf", lambda q, m, s: stats("norm").isf(q, m, s), U(4, lo=0.05, hi=0.95), R(4), U(4))
st("norm_isf_keywords", lambda q, s: stats("norm").isf(q=q, scale=s), U(4, lo=0.05, hi=0.95), U(4))
st("norm_pdf_broadcast", lambda x, m, s: stats("norm").pdf(x, m, s), R(4, 3), R(1, 3), U(4, 1))
st("t_sf", lambda x, m: stats("t").sf(x, 4.0, m), R(4), R(4))
st("gamma_logsf", lambda x: stats("gamma").logsf(x, 2.0), U(4, lo=0.3, hi=3.0))
st("mvn_entropy", lambda c: stats("multivariate_normal").entropy(np.zeros(3), c), SPD(3))
st("poisson_logpmf_broadcast", lambda mu: stats("poisson").logpmf(np.array([[0, 2, 5]] * 4), mu), U(4, 1, lo=0.5, hi=5.0))
st("t_logpdf", lambda x, df: stats("t").logpdf(x, df), R(4), U(4, lo=1.5, hi=6.0))
st("t_logpdf_loc_scale", lambda x, m, s: stats("t").logpdf(x, 3.0, m, s), R(4), R(4), U(4))
st("t_cdf", lambda x, s: stats("t").cdf(x, 5.0, scale=s), R(4), U(4))
st("gamma_logpdf", lambda x, a: stats("gamma").logpdf(x, a), U(4, lo=0.3, hi=3.0), U(4, lo=0.5, hi=3.0))
st("gamma_pdf_scale", lambda x, s: stats("gamma").pdf(x, 2.0, scale=s), U(4, lo=0.3, hi=3.0), U(4))
st("gamma_cdf", lambda x: stats("gamma").cdf(x, 2.5), U(4, lo=0.3, hi=3.0))
st("beta_logpdf", lambda x, a, b: stats("beta").logpdf(x, a, b), U(4, lo=0.1, hi=0.9), U(4, lo=0.5, hi=3.0),
   U(4, lo=0.5, hi=3.0))
st("beta_cdf", lambda x: stats("beta").cdf(x, 2.0, 3.0), U(4, lo=0.1, hi=0.9))
st("chi2_logpdf", lambda x, df: stats("chi2").logpdf(x, df), U(4, lo=0.3, hi=5.0), U(4, lo=1.5, hi=5.0))
st("chi2_cdf", lambda x: stats("chi2").cdf(x, 3.0), U(4, lo=0.3, hi=5.0))
st("expon_logpdf", lambda x, s: stats("expon").logpdf(x, scale=s), U(4), U(4))
st("logistic_logcdf", lambda x, m: stats("logistic").logcdf(x, m), R(4), R(4))
st("laplace_logpdf", lambda x, s: stats("laplace").logpdf(x, 0.1, s), R(4) + 0.3, U(4))
st("cauchy_pdf", lambda x: stats("cauchy").pdf(x), R(4))
st("poisson_logpmf", lambda mu: stats("poisson").logpmf(np.array([0, 2, 5]), mu), U(3, lo=0.5, hi=5.0))
st("poisson_pmf", lambda mu: stats("poisson").pmf(3, mu), U(3, lo=0.5, hi=5.0))
st("poisson_cdf", lambda mu: stats("poisson").cdf(2, mu), U(3, lo=0.5, hi=5.0))
st("dirichlet_logpdf", lambda x, a: stats("dirichlet").logpdf(x / np.sum(x), a), U(3), U(3, lo=0.5, hi=3.0))
st("dirichlet_pdf", lambda a: stats("dirichlet").pdf(np.array([0.2, 0.3, 0.5]), a), U(3, lo=0.5, hi=3.0))
st("mvn_pdf", lambda x, m: stats("multivariate_normal").pdf(x, m), R(2) * 0.5, R(2) * 0.5)

SPD_CONST = SPD(3)


def all_cases() -> list[Case]:
    """Every case, plus a float32 copy of the elementwise, special and structural ones (the
    backend then computes in float32 against the float64 ground truth)."""
    # SciPy's dirichlet checks that x sums to 1 within float64 rounding, which float32 misses
    extra = [c.as_float32() for c in CASES if c.group != "build" and c.name != "dirichlet_logpdf"]
    return CASES + extra


Outcome = str  # 'pass', 'unsupported', 'wrong', 'silent_zero', 'error'


def run_case(c: Case, engine: str) -> tuple[Outcome, str]:
    """Check ``c`` in one engine; the classification and the backend's message.

    'unsupported': the engine raised NotImplementedError (it says what it does not support);
    'silent_zero': a wrong gradient that is all zeros where the ground truth is not;
    'wrong': any other wrong gradient; 'error': any other exception."""
    report = gradtest.check_gradients(c.f, *c.args, backends=[engine], kwargs=c.kwargs)
    if report.ground_truth_error is not None:
        return "error", f"ground truth: {report.ground_truth_error}"
    outcome = report.outcomes[engine]
    if outcome.status == "pass":
        return "pass", ""
    if outcome.status == "error":
        if isinstance(outcome.exception, NotImplementedError):
            return "unsupported", str(outcome.exception)
        return "error", outcome.message
    if _all_zero_gradient(c, engine):
        return "silent_zero", outcome.message
    return "wrong", outcome.message


def scalarized(c: Case) -> Callable[..., Any]:
    """``c.f`` reduced to a scalar with fixed weights (each output leaf times 1, 2, 3, ...)."""

    def leaves(out: Any) -> list[Any]:
        if isinstance(out, (tuple, list)):
            return [leaf for o in out for leaf in leaves(o)]
        return [out]

    def f(*args: Any) -> Any:
        total = 0.0
        for leaf in leaves(c.f(*args, **c.kwargs)):
            weights = np.arange(1.0, np.size(leaf) + 1).reshape(np.shape(leaf))
            total = total + np.sum(leaf * weights)
        return total

    return f


def _all_zero_gradient(c: Case, engine: str) -> bool:
    """True when the engine's gradient of some argument is all zeros and the ground truth's is not
    (the engine lost the derivative without saying so)."""
    f = scalarized(c)
    try:
        got = gradtest.gradient(f, *c.args, backend=engine)
    except Exception:
        return False
    truth = gradtest.gradient(f, *c.args)
    return any(g is not None and np.all(np.asarray(g) == 0) and np.any(np.asarray(t) != 0)
               for g, t in zip(got, truth))
