"""The device kernels (csrc/cuda/) run through their CPU emulation, against the CPU engine.

The emulation compiles the same kernel bodies with the C compiler (grid-stride loops become
plain loops over host memory, atomics plain adds), so every kernel's arithmetic and indexing is
checked here, where there is no GPU: bit for bit against the CPU op table, the CPU reverse
engine and NumPy wherever both sides compute the same operations in the same order. The batched
finite differences of :class:`gradtest.cuda.CudaKernel` are checked against the C-kernel check
(the same engine, fd.c), which they must match exactly. This is a test harness, never GPU
support: ``gradtest.cuda.available()`` ignores it.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradtest
from gradtest import _core, cuda
from gradtest.ckernel import KernelError

from _cbuild import CORE, INCLUDE, PROGRAMS, ROOT, compiler, core_sources, run_c_tests

CUDA_SRC = ROOT / "csrc" / "cuda"
FLAGS = ["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-fvisibility=hidden"]
OPS = [entry["name"] for entry in _core.op_table()]
OP_ID = {name: i for i, name in enumerate(OPS)}
ARITY = {entry["name"]: entry["arity"] for entry in _core.op_table()}
DIFFERENTIABLE = {entry["name"]: entry["differentiable"] for entry in _core.op_table()}
F64, F32 = 0, 1


def _shared_library(out: Path, sources: list[Path]) -> Path:
    cmd = [compiler(), *FLAGS, f"-I{CORE}", f"-I{CUDA_SRC}", f"-I{INCLUDE}", *map(str, sources), "-lm",
           "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{out.name} does not compile:\n{proc.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> cuda.DeviceLibrary:
    d = tmp_path_factory.mktemp("cuda_emulation")
    path = _shared_library(d / "libgradtest_cuda_emulation.so",
                           [CUDA_SRC / "emulation.c", CUDA_SRC / "fd_batch.c", CORE / "fd.c", CORE / "gt_common.c"])
    return cuda.DeviceLibrary(path)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cuda_emulated_kernels")
    return _shared_library(d / "libemulated_kernels.so", [PROGRAMS / "cuda_emulated_kernels.c"])


def ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def layout(out_shape: tuple[int, ...], a_shape: tuple[int, ...], b_shape: tuple[int, ...] = ()) -> cuda.Layout:
    """The gtd_layout of a broadcast op: each operand's contiguous strides, 0 where it broadcasts."""
    lay = cuda.Layout()
    lay.ndim = len(out_shape)

    def strides(shape: tuple[int, ...]) -> list[int]:
        shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
        st, acc = [0] * len(shape), 1
        for d in range(len(shape) - 1, -1, -1):
            st[d] = 0 if shape[d] == 1 and out_shape[d] != 1 else acc
            acc *= shape[d]
        return st

    for d, (s, sa, sb) in enumerate(zip(out_shape, strides(a_shape), strides(b_shape))):
        lay.shape[d], lay.sa[d], lay.sb[d] = s, sa, sb
    return lay


def domain(name: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points where the op and its partials are finite."""
    lo, hi = (1.1, 3.0) if name == "arccosh" else (0.2, 0.9)
    a = rng.uniform(lo, hi, n)
    b = rng.uniform(0.2, 0.9, n)
    return a, b


def chain(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The chain rule of op_rules.h: a zero factor gives 0."""
    with np.errstate(all="ignore"):
        return np.where((p == 0) | (g == 0), np.zeros_like(p), p * g)


SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -2.0, np.inf, -np.inf, np.nan, 1e-300, 1e300, 3.0])


def test_emulation_is_never_reported_as_gpu_support(emu: cuda.DeviceLibrary) -> None:
    assert emu.emulated
    assert "emulation" in repr(emu)
    # the answer on this machine, whatever it is, comes with a reason when it is no
    if not cuda.available():
        reason = cuda.unavailable_reason()
        assert isinstance(reason, str) and reason
        with pytest.raises(RuntimeError, match="unavailable"):
            cuda.device_library()
        with pytest.raises(RuntimeError, match="unavailable"):
            cuda.CudaKernel(1)


def test_importing_gradtest_loads_no_cuda_library() -> None:
    """The device path is lazy: importing gradtest, gradtest.cuda and the cuda_reverse backend
    (as a check does) opens no CUDA library; only asking for the device does."""
    code = ("import gradtest, gradtest.cuda, gradtest.cuda_reverse\n"
            "maps = open('/proc/self/maps').read()\n"
            "assert 'libgradtest_cuda' not in maps and 'libcuda' not in maps, 'loaded at import'\n"
            "gradtest.cuda.available()\n"
            "print('ok')\n")
    # the gradtest under test (installed in CI, the checkout's python/ in development)
    here = str(Path(gradtest.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_missing_cuda_library_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda, "LIBRARY_NAME", "libgradtest_cuda_not_built.so")
    lib, reason = cuda._probe.__wrapped__()
    assert lib is None and "built without its CUDA library" in reason and "GRADTEST_CUDA=0" in reason


@pytest.mark.parametrize("name", OPS)
def test_elementwise_value_matches_the_op_table_bit_for_bit(emu: cuda.DeviceLibrary, name: str) -> None:
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.standard_normal(500) * 3, np.repeat(SPECIALS, SPECIALS.size)])
    b = np.concatenate([rng.standard_normal(500) * 3, np.tile(SPECIALS, SPECIALS.size)])
    binary = ARITY[name] == 2
    with np.errstate(all="ignore"):
        ref = _core.op_partials(name, a, b) if binary else _core.op_partials(name, a)
    lay = layout(a.shape, a.shape, b.shape)
    y = np.empty_like(a)
    assert emu.ew_value(None, F64, OP_ID[name], a.size, lay, ptr(a), ptr(b) if binary else None, ptr(y)) == 0
    assert np.array_equal(y.view(np.uint64), ref[0].view(np.uint64)) or np.array_equal(y, ref[0], equal_nan=True)
    # float32: computed in double, rounded once on store, as the CPU op table does
    with np.errstate(all="ignore"):
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        ref32 = (_core.op_partials(name, a32.astype(np.float64), b32.astype(np.float64)) if binary
                 else _core.op_partials(name, a32.astype(np.float64)))[0].astype(np.float32)
    y32 = np.empty_like(a32)
    assert emu.ew_value(None, F32, OP_ID[name], a.size, lay, ptr(a32), ptr(b32) if binary else None, ptr(y32)) == 0
    assert np.array_equal(y32, ref32, equal_nan=True)


# ops whose float64 CPU partial is computed by vmath.h rather than libm (csrc/core/ops.c)
CPU_VECTOR_MATH = ("sin", "cos")


@pytest.mark.parametrize("name", OPS)
def test_elementwise_vjp_matches_the_op_table_and_chain_rule(emu: cuda.DeviceLibrary, name: str) -> None:
    rng = np.random.default_rng(2)
    a, b = domain(name, rng, 300)
    gy = rng.standard_normal(a.size)
    gy[::7] = 0.0  # a zero adjoint contributes exactly 0
    binary = ARITY[name] == 2
    y, *partials = _core.op_partials(name, a, b) if binary else _core.op_partials(name, a)
    lay = layout(a.shape, a.shape, b.shape)
    for k in range(ARITY[name]):
        expected = chain(partials[k], gy) if DIFFERENTIABLE[name][k] else np.zeros_like(a)
        g = np.full_like(a, np.nan)
        assert emu.ew_vjp(None, F64, OP_ID[name], k, a.size, lay, ptr(a), ptr(b) if binary else None, ptr(y),
                          ptr(gy), ptr(g), 0) == 0
        # accumulate: adds into what is there
        g2 = np.ones_like(a)
        emu.ew_vjp(None, F64, OP_ID[name], k, a.size, lay, ptr(a), ptr(b) if binary else None, ptr(y), ptr(gy),
                   ptr(g2), 1)
        if name in CPU_VECTOR_MATH:
            # the CPU's float64 partial loops compute sin and cos with csrc/core/vmath.h (within
            # 1 ulp of libm, tests/c/test_vmath.c); the emulation calls libm through the rule
            np.testing.assert_array_max_ulp(g, expected, maxulp=2)
            assert np.array_equal(g2, 1.0 + g)  # accumulate adds the same contribution
            assert np.array_equal(g == 0.0, expected == 0.0)  # the chain rule's exact zeros
        else:
            assert np.array_equal(g, expected), (name, k)
            assert np.array_equal(g2, 1.0 + expected)
        # float32: the partial rounded to float, the chain rule in float (the CPU tape's order),
        # at the float32 y the tape holds
        a32, b32, gy32 = a.astype(np.float32), b.astype(np.float32), gy.astype(np.float32)
        y32 = getattr(np, name)(a32, b32) if binary else getattr(np, name)(a32)
        pk = _partial_at(name, k, a32, b32)
        exp32 = chain(pk, gy32) if DIFFERENTIABLE[name][k] else np.zeros_like(a32)
        g32 = np.empty_like(a32)
        assert emu.ew_vjp(None, F32, OP_ID[name], k, a.size, lay, ptr(a32), ptr(b32) if binary else None,
                          ptr(y32), ptr(gy32), ptr(g32), 0) == 0
        assert np.array_equal(g32, exp32), (name, k, "float32")


def _partial_at(name: str, k: int, a32: np.ndarray, b32: np.ndarray) -> np.ndarray:
    """dy/d(arg k) from the CPU reverse engine's float32 path: the tape of sum(op(a, b) * 1)
    seeded with ones gives exactly the partial, rounded to float32."""
    binary = ARITY[name] == 2
    ufunc = getattr(np, name)
    args = (a32, b32) if binary else (a32,)
    grads = gradtest.gradient(lambda *xs: np.sum(ufunc(*xs)), *args, backend="reverse")
    return np.asarray(grads[k], dtype=np.float32)


@pytest.mark.parametrize("name", ["multiply", "arctan2", "hypot", "power", "maximum", "logaddexp"])
def test_broadcast_vjp_then_unbroadcast_matches_the_reverse_engine(emu: cuda.DeviceLibrary, name: str) -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(0.2, 0.9, (3, 1, 4))
    b = rng.uniform(0.2, 0.9, (5, 1))
    u = rng.standard_normal((3, 5, 4))
    out_shape = np.broadcast_shapes(a.shape, b.shape)
    n = int(np.prod(out_shape))
    expected = gradtest.gradient(lambda a, b: np.sum(getattr(np, name)(a, b) * u), a, b, backend="reverse")
    lay = layout(out_shape, a.shape, b.shape)
    y = np.empty(out_shape)
    assert emu.ew_value(None, F64, OP_ID[name], n, lay, ptr(a), ptr(b), ptr(y)) == 0
    assert np.array_equal(y, _core.op_partials(name, *np.broadcast_arrays(a, b))[0])
    # the VJP at the y the CPU tape holds (NumPy's; libm may differ from it in the last bit)
    y = getattr(np, name)(a, b)
    for k, operand in enumerate((a, b)):
        full = np.empty(out_shape)
        assert emu.ew_vjp(None, F64, OP_ID[name], k, n, lay, ptr(a), ptr(b), ptr(y), ptr(u), ptr(full), 0) == 0
        g = np.full(operand.shape, np.nan)
        reduce_lay = layout(out_shape, operand.shape)
        assert emu.unbroadcast(None, F64, n, operand.size, reduce_lay, ptr(full), ptr(g), 0, None, 0) == 0
        # the device sums each output in row-major order; NumPy's pairwise sum may round differently
        np.testing.assert_allclose(g, expected[k], rtol=1e-14, atol=0)
        # bit for bit against the same sum in the same order
        axes = tuple(d for d in range(len(out_shape))
                     if ((1,) * (len(out_shape) - operand.ndim) + operand.shape)[d] == 1 and out_shape[d] > 1)
        moved = np.moveaxis(full, axes, range(len(out_shape) - len(axes), len(out_shape)))
        flat = moved.reshape(moved.shape[: len(out_shape) - len(axes)] + (-1,))
        seq = np.zeros(flat.shape[:-1])
        for r in range(flat.shape[-1]):
            seq = seq + flat[..., r]
        assert np.array_equal(g.reshape(-1), seq.reshape(-1))


def test_unbroadcast_to_a_scalar_and_float32(emu: cuda.DeviceLibrary) -> None:
    rng = np.random.default_rng(4)
    src = rng.standard_normal((6, 7)).astype(np.float32)
    out = np.zeros((), np.float32)
    lay = layout(src.shape, ())
    assert emu.unbroadcast(None, F32, src.size, 1, lay, ptr(src), ptr(out), 0, None, 0) == 0
    seq = np.float32(0)
    for v in src.reshape(-1):
        seq = np.float32(seq + v)
    assert out == seq
    # accumulate
    assert emu.unbroadcast(None, F32, src.size, 1, lay, ptr(src), ptr(out), 1, None, 0) == 0
    assert out == np.float32(seq + seq)


def block_sum(values: np.ndarray, threads: int = 256) -> np.floating:
    """The block reduction's order: thread t sums values[t::threads] in order, then a binary tree."""
    zero = values.dtype.type(0)
    partial = [zero] * threads
    for t in range(threads):
        acc = zero
        for v in values[t::threads]:
            acc = values.dtype.type(acc + v)
        partial[t] = acc
    s = threads // 2
    while s:
        for t in range(s):
            partial[t] = values.dtype.type(partial[t] + partial[t + s])
        s //= 2
    return partial[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_reductions_follow_the_device_order(emu: cuda.DeviceLibrary, dtype: Any) -> None:
    code = F64 if dtype == np.float64 else F32
    rng = np.random.default_rng(12)
    # one block per output (64 <= elements per output < 16384): bit for bit the block order
    src = rng.standard_normal((3, 1000)).astype(dtype)
    out = np.full(3, np.nan, dtype)
    assert emu.unbroadcast(None, code, src.size, 3, layout(src.shape, (3, 1)), ptr(src), ptr(out), 0, None, 0) == 0
    assert np.array_equal(out, [block_sum(row) for row in src])
    # a reduced leading axis: the sums run down the columns
    col = np.full(1000, np.nan, dtype)
    assert emu.unbroadcast(None, code, src.size, 1000, layout(src.shape, (1000,)), ptr(src), ptr(col), 0, None,
                           0) == 0
    assert np.array_equal(col, (src[0] + src[1]) + src[2])  # 3 per output: one thread each, in order
    # several blocks per output, through scratch: chunks of 8192, then the chunks' sums
    big = rng.standard_normal(100_000).astype(dtype)
    scratch = np.full(64, np.nan, dtype)
    total = np.zeros(1, dtype)
    lay = layout(big.shape, ())
    assert emu.unbroadcast(None, code, big.size, 1, lay, ptr(big), ptr(total), 0, ptr(scratch), scratch.size) == 0
    chunks = 100_000 // 8192  # 12
    per = -(-100_000 // chunks)
    parts = np.array([block_sum(big[c * per:(c + 1) * per]) for c in range(chunks)], dtype)
    assert np.array_equal(scratch[:chunks], parts)
    assert total[0] == block_sum(parts)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(total[0], math.fsum(big.astype(float)), rtol=rtol)
    # accumulate, and no scratch: one block
    one = np.ones(1, dtype)
    assert emu.unbroadcast(None, code, big.size, 1, lay, ptr(big), ptr(one), 1, None, 0) == 0
    assert one[0] == dtype(1) + block_sum(big)


def test_batched_dot_in_the_block_order(emu: cuda.DeviceLibrary) -> None:
    rng = np.random.default_rng(14)
    y = rng.standard_normal((5, 700))
    u = rng.standard_normal(700)
    out = np.full(5, np.nan)
    assert emu.batched_dot(None, F64, 5, 700, ptr(y), ptr(u), ptr(out)) == 0
    assert np.array_equal(out, [block_sum(u * row) for row in y])
    y32, out32 = y.astype(np.float32), np.empty(5)
    assert emu.batched_dot(None, F32, 5, 700, ptr(y32), ptr(u), ptr(out32)) == 0
    assert np.array_equal(out32, [block_sum(u * row.astype(np.float64)) for row in y32])


def test_gather_and_scatter_add(emu: cuda.DeviceLibrary) -> None:
    rng = np.random.default_rng(5)
    src = rng.standard_normal(50)
    idx = rng.integers(0, 50, 200).astype(np.int64)  # repeated indices accumulate
    dst = np.empty(200)
    assert emu.gather(None, F64, idx.size, ptr(idx), ptr(src), ptr(dst)) == 0
    assert np.array_equal(dst, src[idx])
    g = rng.standard_normal(200)
    acc = np.zeros(50)
    assert emu.scatter_add(None, F64, idx.size, ptr(idx), ptr(g), ptr(acc)) == 0
    ref = np.zeros(50)
    np.add.at(ref, idx, g)  # in index order, as the emulation adds
    assert np.array_equal(acc, ref)
    g32, acc32, ref32 = g.astype(np.float32), np.zeros(50, np.float32), np.zeros(50, np.float32)
    assert emu.scatter_add(None, F32, idx.size, ptr(idx), ptr(g32), ptr(acc32)) == 0
    np.add.at(ref32, idx, g32)
    assert np.array_equal(acc32, ref32)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cumsum_and_its_vjp(emu: cuda.DeviceLibrary, axis: int) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5))
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    y = np.empty_like(x)
    assert emu.cumsum(None, F64, outer, x.shape[axis], inner, ptr(x), ptr(y), 0, 0) == 0
    assert np.array_equal(y, np.cumsum(x, axis=axis))
    # the VJP: a reverse cumulative sum, as the CPU reverse engine computes it
    u = rng.standard_normal(x.shape)
    (expected,) = gradtest.gradient(lambda x: np.sum(np.cumsum(x, axis=axis) * u), x, backend="reverse")
    g = np.empty_like(x)
    assert emu.cumsum(None, F64, outer, x.shape[axis], inner, ptr(u), ptr(g), 1, 0) == 0
    np.testing.assert_allclose(g, expected, rtol=1e-14, atol=1e-15)
    assert np.array_equal(g, np.flip(np.cumsum(np.flip(u, axis), axis=axis), axis))


def test_fd_points_copy_fill(emu: cuda.DeviceLibrary) -> None:
    x0 = np.arange(6, dtype=np.float64)
    comp = np.array([0, 5, 2, -1], dtype=np.int64)  # -1 replaces nothing: x0 itself
    val = np.array([10.5, -1.25, 1 / 3, 99.0])
    out = np.empty((4, 6))
    assert emu.fd_points(None, F64, 4, 6, ptr(x0), ptr(comp), ptr(val), ptr(out)) == 0
    ref = np.tile(x0, (4, 1))
    ref[0, 0], ref[1, 5], ref[2, 2] = val[:3]
    assert np.array_equal(out, ref)
    x32, out32 = x0.astype(np.float32), np.empty((4, 6), np.float32)
    assert emu.fd_points(None, F32, 4, 6, ptr(x32), ptr(comp), ptr(val), ptr(out32)) == 0
    assert np.array_equal(out32, ref.astype(np.float32))
    dst = np.zeros(6)
    assert emu.fill(None, F64, 6, 2.5, ptr(dst)) == 0 and np.all(dst == 2.5)
    assert emu.copy(None, F64, 6, ptr(x0), ptr(dst), 1) == 0 and np.array_equal(dst, x0 + 2.5)


def test_launchers_refuse_bad_arguments(emu: cuda.DeviceLibrary) -> None:
    a = np.ones(3)
    lay = layout(a.shape, a.shape)
    assert emu.ew_value(None, F64, len(OPS), 3, lay, ptr(a), None, ptr(a)) == -1
    assert emu.ew_vjp(None, F64, OP_ID["sin"], 1, 3, lay, ptr(a), None, ptr(a), ptr(a), ptr(a), 0) == -1
    assert emu.ew_value(None, 7, OP_ID["sin"], 3, lay, ptr(a), None, ptr(a)) == -1
    assert "invalid argument" in emu.describe(-1)
    # n == 0 launches nothing
    assert emu.ew_value(None, F64, OP_ID["sin"], 0, lay, None, None, None) == 0


# -- CudaKernel: batched finite differences with the CPU engine's rules ------------------------

def _fn(kernels: Path, name: str) -> int:
    return ctypes.cast(getattr(ctypes.CDLL(str(kernels)), name), ctypes.c_void_p).value


def test_batched_fd_equals_the_c_kernel_check_bit_for_bit(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1.0, 1.5, 60)
    lib = ctypes.CDLL(str(kernels))
    counter = ctypes.c_long.in_dll(lib, "launches")
    counter.value = 0
    k = cuda.CudaKernel(_fn(kernels, "rosen_f64"), library=emu, batch=32, name="rosen")
    got = k.finite_differences(x)
    cpu = gradtest.CKernel(f"{kernels}:rosen_cpu_f64").run_stage("function", x, isolate=False)
    assert got["value"] == cpu.value
    assert np.array_equal(got["gradient"], cpu.gradient)
    assert np.array_equal(got["errors"], cpu.errors)
    assert got["evaluations"] >= cpu.evaluations
    # batches: every launch but f(x) and the noise probes evaluates up to 32 points
    assert got["launches"] == counter.value
    assert got["launches"] < got["evaluations"] / 5
    # fewer launches than one per point, and about ceil(points / batch) per round
    assert got["launches"] <= 1 + 24 + got["rounds"] * math.ceil(2 * x.size / 32)


def test_batched_fd_float32_and_other_methods(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    rng = np.random.default_rng(8)
    x = rng.uniform(-1.0, 1.5, 20)
    for method, richardson in (("central", False), ("forward", True), ("backward", False)):
        k = cuda.CudaKernel(_fn(kernels, "rosen_f64"), library=emu, batch=7)
        got = k.finite_differences(x, method=method, richardson=richardson)
        cpu = gradtest.CKernel(f"{kernels}:rosen_cpu_f64").run_stage(
            "function", x, isolate=False, method=method, richardson=richardson)
        assert np.array_equal(got["gradient"], cpu.gradient), method
    x32 = x.astype(np.float32)
    k32 = cuda.CudaKernel(_fn(kernels, "rosen_f32"), library=emu, dtype="float32")
    got = k32.finite_differences(x32)
    cpu = gradtest.CKernel(f"{kernels}:rosen_cpu_f32", dtype="float32").run_stage("function", x32, isolate=False)
    assert np.array_equal(got["gradient"], cpu.gradient)


def test_test_gradients_checks_a_device_kernel(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    x = np.random.default_rng(9).uniform(-1.0, 1.5, 40)
    good = cuda.CudaKernel(f"{kernels}:rosen_f64", gradient="rosen_grad_f64", library=emu)
    assert good.__gradtest_backends__ == ("user",)
    report = gradtest.check_gradients(good, x)
    assert report.passed, report
    assert "CPU emulation" in str(report)
    gradtest.test_gradients(good, x)
    f32 = cuda.CudaKernel(f"{kernels}:rosen_f32", gradient="rosen_grad_f32", library=emu, dtype="float32")
    gradtest.test_gradients(f32, x.astype(np.float32))


def test_a_wrong_device_gradient_is_caught_and_named(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    x = np.random.default_rng(10).uniform(-1.0, 1.5, 40)
    bad = cuda.CudaKernel(f"{kernels}:rosen_f64", gradient="rosen_grad_wrong_f64", library=emu)
    with pytest.raises(AssertionError, match=r"\[20\]"):
        gradtest.test_gradients(bad, x)
    lazy = cuda.CudaKernel(f"{kernels}:rosen_f64", gradient="lazy_grad_f64", library=emu)
    assert np.all(np.isnan(lazy.gradient(x)))  # unwritten elements show as NaN, never as 0
    with pytest.raises(AssertionError):
        gradtest.test_gradients(lazy, x)


def test_a_vector_kernel_and_its_vjp(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    x = np.random.default_rng(13).uniform(-1.0, 1.5, 30)
    good = cuda.CudaKernel(f"{kernels}:wave_f64", vjp="wave_vjp_f64", n_out=lambda n: n, library=emu, batch=16)
    assert good.__gradtest_backends__ == ("user_vjp",)
    y = good(x)
    assert y.shape == (30,) and np.allclose(y, np.sin(x) * np.roll(x, -1))
    # the ground truth of <u, f>, u the CKernel's cotangent: the same rules as the C-kernel check
    # (the dot of the outputs is summed in the device's block order, so not bit for bit)
    got = good.finite_differences(x)
    assert np.array_equal(good.cotangent(30), gradtest.CKernel(f"{kernels}:wave_cpu_f64", n_out=30).cotangent(30))
    cpu = gradtest.CKernel(f"{kernels}:wave_cpu_f64", n_out=30).run_stage("function", x, isolate=False)
    assert np.all(np.abs(got["gradient"] - cpu.gradient) <= got["errors"] + cpu.errors + 1e-14)
    report = gradtest.check_gradients(good, x)
    assert report.passed, report
    assert "cotangent" in str(report)
    bad = cuda.CudaKernel(f"{kernels}:wave_f64", vjp="wave_vjp_wrong_f64", n_out=30, library=emu)
    with pytest.raises(AssertionError, match=r"\[0\]"):
        gradtest.test_gradients(bad, x)
    with pytest.raises(ValueError, match="vector functions"):
        cuda.CudaKernel(f"{kernels}:wave_f64", vjp="wave_vjp_f64", library=emu)
    with pytest.raises(ValueError, match="scalar functions"):
        cuda.CudaKernel(f"{kernels}:wave_f64", gradient="rosen_grad_f64", n_out=30, library=emu)
    with pytest.raises(ValueError, match="u: expected 30"):
        good.vjp(x, np.ones(3))
    with pytest.raises(KernelError, match="stage 'vjp'"):  # the kernel refuses m != n
        cuda.CudaKernel(f"{kernels}:wave_f64", vjp="wave_vjp_f64", n_out=29, library=emu).vjp(x)


def test_a_failing_device_kernel_reports_the_cuda_error(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    k = cuda.CudaKernel(f"{kernels}:failing_f64", library=emu, name="failing")
    with pytest.raises(KernelError, match="failing: stage 'function': CUDA error 700") as info:
        k.finite_differences(np.ones(4))
    assert info.value.status == 700
    with_gradient = cuda.CudaKernel(f"{kernels}:failing_f64", gradient="rosen_grad_f64", library=emu)
    report = gradtest.check_gradients(with_gradient, np.ones(4))
    assert not report.passed and "CUDA error 700" in str(report)


def _no_children_left() -> None:
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    if children.exists():
        assert children.read_text().split() == [], "an isolated check left a child process behind"


def test_isolated_checks_run_in_a_spawned_child(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    x = np.random.default_rng(3).uniform(-1.0, 1.5, 12)
    k = cuda.CudaKernel(f"{kernels}:rosen_f64", gradient="rosen_grad_f64", library=emu, isolate=True, batch=8)
    report = gradtest.check_gradients(k, x)
    assert report.passed, report
    assert "in a spawned child process" in " ".join(report.notes)
    # the child runs the same engine: the ground truth is the in-process one, bit for bit
    here = cuda.CudaKernel(f"{kernels}:rosen_f64", library=emu, batch=8).finite_differences(x)
    assert np.array_equal(report.ground_truth[0], here["gradient"])
    bad = cuda.CudaKernel(f"{kernels}:rosen_f64", gradient="rosen_grad_wrong_f64", library=emu)
    assert gradtest.check_gradients(bad, x, isolate=True).outcomes["user"].status == "fail"
    # a kernel error in the child comes back with its CUDA error code
    failing = cuda.CudaKernel(f"{kernels}:failing_f64", gradient="rosen_grad_f64", library=emu)
    report = gradtest.check_gradients(failing, np.ones(4), isolate=True)
    assert not report.passed and "CUDA error 700" in str(report)
    _no_children_left()


@pytest.mark.parametrize("f, gradient, stage, what", [
    ("aborting_f64", "rosen_grad_f64", "finite_differences", "crashed with SIGABRT"),
    ("rosen_f64", "segfaulting_grad_f64", "gradient", "crashed with SIGSEGV"),
    ("exiting_f64", "rosen_grad_f64", "finite_differences", "exited with code 3"),
])
def test_a_crashing_kernel_in_an_isolated_check_is_reported(emu: cuda.DeviceLibrary, kernels: Path, f: str,
                                                           gradient: str, stage: str, what: str) -> None:
    k = cuda.CudaKernel(f"{kernels}:{f}", gradient=gradient, library=emu, isolate=True, batch=4)
    report = gradtest.check_gradients(k, np.linspace(0.1, 0.9, 6))
    text = str(report)
    assert not report.passed and what in text and repr(stage) in text, text
    if stage == "gradient":  # the ground truth came back before the gradient's crash
        assert report.ground_truth is not None and report.outcomes["user"].status == "error"
        assert isinstance(report.outcomes["user"].exception, gradtest.ckernel.KernelCrash)
    _no_children_left()


def test_a_hanging_kernel_is_killed_after_the_timeout(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    k = cuda.CudaKernel(f"{kernels}:hanging_f64", gradient="rosen_grad_f64", library=emu, isolate=True, timeout=3)
    report = gradtest.check_gradients(k, np.ones(3))
    assert not report.passed and "timed out after 3 s" in str(report)
    _no_children_left()


def test_isolation_needs_references_a_child_can_resolve(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    with pytest.raises(ValueError, match="f given as an address"):
        cuda.CudaKernel(_fn(kernels, "rosen_f64"), library=emu, isolate=True)
    with pytest.raises(ValueError, match="ctx and stream"):
        cuda.CudaKernel(f"{kernels}:rosen_f64", library=emu, isolate=True, ctx=1234)
    with pytest.raises(ValueError, match="needs isolate=True"):
        cuda.CudaKernel(f"{kernels}:rosen_f64", library=emu, timeout=3)
    k = cuda.CudaKernel(_fn(kernels, "rosen_f64"), library=emu)
    with pytest.raises(ValueError, match="f given as an address"):
        gradtest.check_gradients(k, np.ones(3), isolate=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        k.__gradtest_check__((np.ones(3),), type("S", (), {"extra": {"threads": 2}})())


def test_cuda_kernel_arguments(emu: cuda.DeviceLibrary, kernels: Path) -> None:
    fn = f"{kernels}:rosen_f64"
    with pytest.raises(ValueError, match="NULL"):
        cuda.CudaKernel(None, library=emu)
    with pytest.raises(ValueError, match="dtype"):
        cuda.CudaKernel(fn, library=emu, dtype="int32")
    with pytest.raises(ValueError, match="batch"):
        cuda.CudaKernel(fn, library=emu, batch=0)
    with pytest.raises(gradtest.ckernel.KernelLoadError, match="no symbol"):
        cuda.CudaKernel(fn, gradient="nope", library=emu)
    k = cuda.CudaKernel(fn, library=emu)
    with pytest.raises(TypeError, match="float64"):
        k.finite_differences(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="no gradient"):
        k.gradient(np.ones(3))
    with pytest.raises(TypeError, match="numpy.ndarray or a device array"):
        k.finite_differences([1.0, 2.0])
    assert k.batch_size(10) == 20 and k.batch_size(10**8) == 1
    assert "CPU emulation" in repr(k)


def test_the_batched_fd_driver_under_the_sanitizers(tmp_path: Path) -> None:
    """fd_batch.c over the emulation: results, every allocation failing in turn, a failing
    kernel and bad arguments, under AddressSanitizer (leaks) and UBSan where available."""
    out = run_c_tests("test_fd_batch.c", [CUDA_SRC / "emulation.c", CUDA_SRC / "fd_batch.c",
                                          *core_sources("fd", "gt_common")], tmp_path)
    assert "test_fd_batch:" in out


def test_cuda_sources_compile_with_nvcc(tmp_path: Path) -> None:
    """Every .cu file compiles for sm_80 and sm_90 (CI has nvcc but no GPU)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    sources = sorted(CUDA_SRC.glob("*.cu")) + sorted((ROOT / "examples" / "kernels").glob("*.cu"))
    assert sources
    for src in sources:
        cmd = [nvcc, "-std=c++17", "-gencode", "arch=compute_80,code=sm_80", "-gencode",
               "arch=compute_90,code=[sm_90,compute_90]", f"-I{CORE}", f"-I{CUDA_SRC}", f"-I{INCLUDE}",
               "-Xcompiler", "-Wall,-Wextra,-Werror", "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{src.name}:\n{proc.stderr[-4000:]}"


# -- what a machine without a GPU sees ---------------------------------------------------------

class _RecordingLibrary:
    """The two calls cuda.host_copy makes, on host memory, in the order they are made."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def stream_synchronize(self, stream: Any) -> int:
        self.calls.append(("synchronize", stream))
        return 0

    def memcpy_sync(self, stream: Any, dst: int, src: int, nbytes: int, to_device: int) -> int:
        self.calls.append(("copy", stream))
        ctypes.memmove(dst, src, nbytes)
        return 0

    def check(self, code: int, what: str) -> None:
        assert code == 0, what


@pytest.mark.parametrize("stream", [None, 1, 2, 0x5555])
def test_host_copy_synchronizes_the_stream_a_device_array_names(stream: Any) -> None:
    # version 3 of __cuda_array_interface__: a consumer synchronizes the producer's stream
    # before it reads (CuPy names its current stream, which may be non-blocking: the legacy
    # default stream of the copy does not wait for it)
    data = np.arange(6.0).reshape(2, 3)

    class Producer:
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f8", "data": (data.ctypes.data, True),
                                    "version": 3, "strides": None, "stream": stream}

    lib = _RecordingLibrary()
    out = cuda.host_copy(Producer(), lib)  # type: ignore[arg-type]
    assert np.array_equal(out, data)
    expected = ([("synchronize", stream)] if stream else []) + [("copy", None)]
    assert lib.calls == expected


def test_without_a_driver_the_reason_names_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    # what cudaGetDeviceCount says without a driver (error 35) reads as "driver too old"
    monkeypatch.setattr(cuda, "_driver_missing", lambda: "libcuda.so.1 does not load (planted)")

    class NoDriver:
        emulated = False

        def device_count(self, count: Any) -> int:
            return 35

        def describe(self, code: int) -> str:
            return "CUDA driver version is insufficient for CUDA runtime version"

    monkeypatch.setattr(cuda, "DeviceLibrary", lambda path: NoDriver())
    monkeypatch.setattr(cuda.Path, "exists", lambda self: True)
    lib, reason = cuda._probe.__wrapped__()
    assert lib is None
    assert reason.startswith("no NVIDIA driver: libcuda.so.1 does not load (planted)") and "returned 35" in reason


def test_the_cuda_backend_asked_for_without_a_device_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda, "_probe", lambda: (None, "no CUDA device is visible (planted)"))
    report = gradtest.check_gradients(lambda x: np.sum(np.sin(x)), np.linspace(0.1, 1.0, 4),
                                      backends=["cuda_reverse"])
    assert not report.passed
    outcome = report.outcomes["cuda_reverse"]
    assert outcome.status == "error" and "device path is unavailable: no CUDA device is visible (planted)" in \
        outcome.message


def test_with_cupy_installed_and_no_gpu_gradtest_works_and_the_device_path_says_why() -> None:
    # a machine with CuPy installed (its wheel needs no GPU to import) but no GPU or driver: a
    # fresh interpreter, so that nothing this process imported earlier hides an import problem
    pytest.importorskip("cupy")
    code = """
import numpy as np
import cupy  # noqa: F401  (importable without a GPU)
import gradtest
from gradtest import cuda
assert gradtest.check_gradients(lambda x: np.sum(np.sin(x) * x), np.linspace(0.1, 1.0, 5)).passed
assert not cuda.available()
reason = cuda.unavailable_reason()
assert reason, reason
try:
    cuda.device_library()
except RuntimeError as exc:
    assert reason in str(exc)
else:
    raise AssertionError("device_library() returned without a device")
print("REASON", reason)
"""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None and shutil.which("nvidia-smi"):
        pytest.skip("a GPU may be visible here: this test is about a machine without one")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "REASON " in res.stdout
