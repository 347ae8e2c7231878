"""GPU tests of the device path: run only where a GPU is visible (tests/gpu/run.sh), skipped
cleanly elsewhere, saying why.

They check what the emulation cannot: the nvcc build of the kernels on a real device against the
CPU op table, test_gradients on CuPy arrays and PyTorch CUDA tensors through the cuda_reverse
backend, and CUDA kernels (examples/kernels/rosenbrock_cuda.cu) through batched finite
differences, with CUDA's own error strings.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradtest
from gradtest import _core, cuda, cuda_reverse
from gradtest.ckernel import KernelError

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not cuda.available(), reason=f"no GPU: {cuda.unavailable_reason()}")

OPS = [entry["name"] for entry in _core.op_table()]
ARITY = {entry["name"]: entry["arity"] for entry in _core.op_table()}
# correctly rounded on the device as on the host
EXACT = {"add", "subtract", "multiply", "divide", "negative", "positive", "abs", "sign", "sqrt", "square",
         "reciprocal", "maximum", "minimum", "fmax", "fmin", "fmod", "remainder"}


def chain20(x: Any) -> Any:
    """A 20-op elementwise chain, NumPy API (runs on NumPy, CuPy and the device tape)."""
    y = np.sin(x) * 0.5 + 1.5
    y = np.log(y) + np.cos(y) * y
    y = np.tanh(y) - np.exp(-y * y)
    y = np.sqrt(y * y + 1.0) / (1.0 + np.abs(y))
    y = np.arctan(y) * y + np.square(y)
    return np.sum(y)


@pytest.fixture(scope="module")
def cupy() -> Any:
    return pytest.importorskip("cupy")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path_factory.mktemp("cuda_example") / "librosen_cuda.so"
    cmd = [nvcc, "-shared", "-Xcompiler", "-fPIC", "-O2", f"-I{gradtest.ckernel.get_include()}",
           "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=[sm_90,compute_90]",
           str(ROOT / "examples" / "kernels" / "rosenbrock_cuda.cu"), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def test_the_device_build_is_loaded() -> None:
    lib = cuda.device_library()
    assert not lib.emulated
    assert cuda.unavailable_reason() is None


@pytest.mark.parametrize("name", OPS)
def test_device_elementwise_kernels_match_the_op_table(cupy: Any, name: str) -> None:
    lib = cuda.device_library()
    rng = np.random.default_rng(1)
    lo, hi = (1.1, 3.0) if name == "arccosh" else (0.2, 0.9)
    a, b = rng.uniform(lo, hi, 4096), rng.uniform(0.2, 0.9, 4096)
    binary = ARITY[name] == 2
    ref = _core.op_partials(name, a, b) if binary else _core.op_partials(name, a)
    da, db = cupy.asarray(a), cupy.asarray(b)
    dy, dg = cupy.empty_like(da), cupy.empty_like(da)
    gy = cupy.asarray(rng.standard_normal(4096))
    lay = cuda_reverse.layout(a.shape, a.shape, b.shape)
    stream = cupy.cuda.get_current_stream().ptr or None
    lib.check(lib.ew_value(stream, 0, cuda_reverse.OP_ID[name], a.size, lay, da.data.ptr,
                           db.data.ptr if binary else None, dy.data.ptr), name)
    y = cupy.asnumpy(dy)
    if name in EXACT:
        assert np.array_equal(y, ref[0])
    else:  # CUDA's libdevice is within 2 ulp of the correctly rounded value, as glibc's libm
        np.testing.assert_allclose(y, ref[0], rtol=2e-15, atol=0)
    dref = cupy.asarray(ref[0])  # held for the launches that read it
    for k in range(ARITY[name]):
        lib.check(lib.ew_vjp(stream, 0, cuda_reverse.OP_ID[name], k, a.size, lay, da.data.ptr,
                             db.data.ptr if binary else None, dref.data.ptr, gy.data.ptr, dg.data.ptr, 0), name)
        np.testing.assert_allclose(cupy.asnumpy(dg), ref[1 + k] * cupy.asnumpy(gy), rtol=1e-14, atol=1e-300)


def test_cupy_inputs_are_checked_by_the_device_tape(cupy: Any) -> None:
    x = cupy.asarray(np.random.default_rng(2).uniform(-1.0, 1.0, 1000))
    w = cupy.asarray(np.random.default_rng(3).uniform(-1.0, 1.0, (10, 100)))

    def f(x: Any, w: Any) -> Any:
        h = np.tanh(w @ x.reshape(100, 10))
        return np.sum(np.cumsum(h, axis=1) * 0.1) + chain20(x) + np.sum(x[::3] ** 2)

    report = gradtest.check_gradients(f, x, w)
    assert report.outcomes["cuda_reverse"].status == "pass", report
    gradtest.test_gradients(f, x, w, backends=["cuda_reverse"])


def test_cupy_on_a_non_default_stream(cupy: Any) -> None:
    x = cupy.asarray(np.random.default_rng(4).uniform(-1.0, 1.0, 500))
    with cupy.cuda.Stream(non_blocking=True):
        gradtest.test_gradients(chain20, x, backends=["cuda_reverse"])
        (g,) = cuda_reverse.device_gradient(chain20, x)
    assert isinstance(g, cupy.ndarray)  # the gradient stays on the device, as CuPy


def test_float32_cupy(cupy: Any) -> None:
    x = cupy.asarray(np.random.default_rng(5).uniform(-1.0, 1.0, 300).astype(np.float32))
    gradtest.test_gradients(chain20, x, backends=["cuda_reverse"])


def test_torch_cuda_tensors_are_checked_by_the_device_tape() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    x = torch.tensor(np.random.default_rng(6).uniform(-1.0, 1.0, 400), device="cuda")
    report = gradtest.check_gradients(chain20, x, backends=["cuda_reverse"])
    assert report.passed, report
    (g,) = cuda_reverse.device_gradient(chain20, x)
    assert isinstance(g, torch.Tensor) and g.is_cuda


def test_torch_code_on_cuda_tensors_runs_the_device_tape_by_default() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    rng = np.random.default_rng(12)
    x = torch.tensor(rng.uniform(-1.0, 1.0, (8, 16)), device="cuda")
    w = torch.tensor(rng.uniform(-1.0, 1.0, (4, 16, 3)), device="cuda")

    def f(x: Any) -> Any:  # torch code: the device tape records it through __torch_function__
        # the ground truth and the torch backend run f on CPU copies of x, so f moves its own
        # tensors to x's device, as device-agnostic torch code does (w @ a CPU x would raise)
        h = torch.tanh(x @ w.to(x.device))  # a batched, broadcast matmul
        return torch.sum(h.cumsum(1) ** 2) + x.exp().mean() + torch.sum(torch.sin(x).transpose(0, 1)[::2])

    report = gradtest.check_gradients(f, x)
    assert report.outcomes["cuda_reverse"].status == "pass", report
    assert report.outcomes["torch"].status == "pass", report
    other = gradtest.check_gradients(lambda x: torch.erf(x).sum(), x)  # not recordable: skipped, named
    assert other.outcomes["cuda_reverse"].status == "skipped" and "torch.erf" in other.outcomes["cuda_reverse"].message


def test_cupy_batched_matmul_max_where_concatenate(cupy: Any) -> None:
    rng = np.random.default_rng(13)
    a = cupy.asarray(rng.uniform(-1.0, 1.0, (3, 5, 4)))
    v = cupy.asarray(rng.uniform(-1.0, 1.0, 4))

    def f(a: Any, v: Any) -> Any:
        h = np.tanh(a @ v)  # (3, 5)
        return (np.sum(np.max(h, axis=1) ** 2) + np.sum(np.where(h > 0, h, 0.1 * h))
                + np.sum(np.concatenate([h, h[:, :2] * 3.0], axis=1) ** 2))

    report = gradtest.check_gradients(f, a, v)
    assert report.outcomes["cuda_reverse"].status == "pass", report


def test_device_leaves_of_other_libraries(cupy: Any) -> None:
    x = cupy.asarray(np.random.default_rng(14).uniform(-1.0, 1.0, 200))

    class DLPackOnly:  # only the DLPack protocol, as a third library's array
        def __dlpack__(self, **kw: Any) -> Any:
            return x.__dlpack__(**kw)

        def __dlpack_device__(self) -> Any:
            return x.__dlpack_device__()

    class InterfaceOnly:  # only __cuda_array_interface__, as a Numba device array
        __cuda_array_interface__ = x.__cuda_array_interface__

    for leaf in (DLPackOnly(), InterfaceOnly()):
        report = gradtest.check_gradients(chain20, leaf)
        assert report.outcomes["cuda_reverse"].status == "pass", report


def test_an_unsupported_function_on_the_device_is_an_error_not_a_pass(cupy: Any) -> None:
    x = cupy.asarray(np.random.default_rng(7).uniform(-1.0, 1.0, 50))
    report = gradtest.check_gradients(lambda x: np.sum(np.partition(x, 3)), x, backends=["cuda_reverse"])
    assert not report.passed
    assert "numpy.partition" in str(report)


def test_a_cuda_kernel_through_batched_finite_differences(example: Path) -> None:
    x = np.random.default_rng(8).uniform(-1.0, 1.5, 2000)
    k = cuda.CudaKernel(f"{example}:rosen_batch", gradient="rosen_grad", name="rosen_batch")
    report = gradtest.check_gradients(k, x)
    assert report.passed, report
    res = k.finite_differences(x)
    assert res["launches"] < res["evaluations"] / 20
    # the same rules as the CPU engine: the C kernel of the same function agrees
    src = ROOT / "examples" / "kernels" / "rosenbrock.c"
    lib = example.with_name("librosen_cpu.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", f"-I{gradtest.ckernel.get_include()}", str(src), "-o",
                    str(lib)], check=True)
    cpu = gradtest.CKernel(f"{lib}:rosen_f").run_stage("function", x, isolate=False)
    np.testing.assert_allclose(res["gradient"], cpu.gradient, rtol=1e-8, atol=1e-8)


def test_a_wrong_cuda_gradient_is_caught(example: Path) -> None:
    x = np.random.default_rng(9).uniform(0.5, 1.5, 200)
    k = cuda.CudaKernel(f"{example}:rosen_batch", gradient="rosen_grad_wrong")
    with pytest.raises(AssertionError):
        gradtest.test_gradients(k, x)


def test_a_failing_cuda_kernel_reports_the_cuda_error_string(example: Path) -> None:
    k = cuda.CudaKernel(f"{example}:rosen_broken", name="broken")
    with pytest.raises(KernelError, match="invalid configuration argument"):
        k.finite_differences(np.ones(10))


def test_an_isolated_check_keeps_a_faulting_kernel_in_its_child(example: Path) -> None:
    x = np.random.default_rng(15).uniform(-1.0, 1.5, 300)
    good = cuda.CudaKernel(f"{example}:rosen_batch", gradient="rosen_grad", isolate=True)
    report = gradtest.check_gradients(good, x)
    assert report.passed and "spawned child" in " ".join(report.notes), report
    faulting = cuda.CudaKernel(f"{example}:rosen_batch", gradient="rosen_grad_fault", isolate=True)
    report = gradtest.check_gradients(faulting, x)
    assert report.outcomes["user"].status == "error" and "illegal memory access" in str(report), report
    # the fault stayed in the child: this process's context still runs kernels
    assert gradtest.check_gradients(cuda.CudaKernel(f"{example}:rosen_batch", gradient="rosen_grad"), x).passed


def test_device_inputs_to_a_cuda_kernel(example: Path, cupy: Any) -> None:
    x = cupy.asarray(np.random.default_rng(10).uniform(-1.0, 1.5, 100))
    k = cuda.CudaKernel(f"{example}:rosen_batch", gradient="rosen_grad")
    gradtest.test_gradients(k, x)
