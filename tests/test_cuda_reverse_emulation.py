"""The device reverse backend (gradtest.cuda_reverse) end to end on the CPU emulation.

The driver that records the device tape and sweeps it is the one a GPU runs; only its Memory
differs (host memory and the emulated kernels here, CuPy or PyTorch CUDA there). So these tests
check the host-side logic (what each NumPy call records, broadcasting, which kernels a VJP
launches, the absence of host round trips in the sweep, the refusals) where there is no GPU.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradtest
from gradtest import cuda, cuda_reverse
from gradtest.backends import get_backend, register_backend, unregister_backend

from test_cuda_emulation import CORE, CUDA_SRC, _shared_library

BACKEND = "cuda_reverse_emulated"


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> cuda.DeviceLibrary:
    d = tmp_path_factory.mktemp("cuda_reverse_emulation")
    path = _shared_library(d / "libgradtest_cuda_emulation.so",
                           [CUDA_SRC / "emulation.c", CUDA_SRC / "fd_batch.c", CORE / "fd.c", CORE / "gt_common.c"])
    return cuda.DeviceLibrary(path)


class CountingMemory(cuda_reverse.Memory):
    """Host memory that counts copies to the host, to show the sweep makes none."""

    def __init__(self, library: cuda.DeviceLibrary) -> None:
        super().__init__(library)
        self.downloads = 0

    def download(self, a: Any) -> np.ndarray:
        self.downloads += 1
        return super().download(a)


@pytest.fixture(scope="module")
def backend(emu: cuda.DeviceLibrary) -> Any:
    """The cuda_reverse driver on emulated memory, as a backend named in backends=."""
    register_backend(BACKEND, cuda_reverse.compute_with(lambda problem, i: cuda_reverse.Memory(emu)),
                     default=False, description="cuda_reverse on the CPU emulation (tests only)")
    yield BACKEND
    unregister_backend(BACKEND)


def rng() -> np.random.Generator:
    return np.random.default_rng(11)


FUNCTIONS = {
    "chain": lambda x: np.sum(np.tanh(np.sin(x) * 2.0 + np.exp(-x)) / (1.0 + x ** 2)),
    "broadcast": lambda x, y: np.sum(np.hypot(x[:, None], y) * np.arctan2(y, 1.5)),
    "axes": lambda x: np.sum(np.sum(x * x, axis=1, keepdims=True) * np.mean(x, axis=(0, 2))[None, :, None] ** 0),
    "mean": lambda x: np.mean(np.log1p(x * x)) + np.sum(x.sum(axis=0)),
    "cumsum": lambda x: np.sum(np.cos(np.cumsum(x, axis=1)) * np.cumsum(x.ravel())[: x.shape[1]].sum()),
    "indexing": lambda x: np.sum(x[np.array([0, 2, 2, 5])] ** 3) + np.sum(x[1:4] * x[::-1][:3]),
    "reshape": lambda x: np.sum(np.sqrt(x.reshape(2, -1) + 2.0).T[0] * 3.0),
    "matmul": lambda a, b: np.sum(np.tanh(a @ b) * (b.T @ a.T).T),
    "maximum": lambda x, y: np.sum(np.maximum(x, y) + np.minimum(x, 0.3) + np.logaddexp(x, y)),
    # NumPy's matmul semantics: stacks broadcast, 1-d operands are vectors
    "batched_matmul": lambda a, b: np.sum(np.tanh(a @ b) ** 2) + np.sum(np.matmul(b.swapaxes(-1, -2), a[0].T)),
    "vector_matmul": lambda a, v: np.sum(np.sin(a @ v)) + (v @ v) * 0.5 + np.sum(v @ a.T) + np.dot(v, v),
    "extremes": lambda x: np.sum(np.max(x, axis=1) ** 2) + np.min(x) + np.sum(np.amax(x, axis=0, keepdims=True) * x),
    "where": lambda x, y: np.sum(np.where(x > 0.6, np.sin(x), y[:, None] * x) ** 2) + np.sum(x[x < 0.5]),
    "concatenate": lambda x, y: np.sum(np.cos(np.concatenate([x, y[None, :] * 2.0, x ** 2], axis=0))
                                       * np.stack([y, y[::-1]], axis=1).sum()),
    "statistics": lambda x: (np.sum(np.var(x, axis=0) * np.std(x, axis=1, ddof=1, keepdims=True))
                             + np.average(x) + np.sum(np.ptp(x, axis=1)) + np.trace(x) + np.sum(np.diff(x, 2, axis=1) ** 2)),
    "sort_clip": lambda x, y: (np.sum(np.sort(x, axis=1) * np.arange(4.0)) + np.sum(np.sort(y, axis=None)[:2])
                               + np.sum(np.clip(x, 0.4, 0.9) ** 2) + np.sum(np.outer(y, x[0]) ** 2) + np.vdot(x[0], y)
                               + np.inner(y, y)),
    "stacks": lambda x, y: np.sum(np.hstack([x, x[:, :1]]) ** 2) + np.sum(np.vstack([x, y]) * np.append(x, y[None], 0))
                           + np.sum(np.triu(x, 1) * 5.0 + np.tril(x) ** 2) + np.sum(np.rot90(x) @ x)
                           + np.sum(np.take_along_axis(x, np.array([[3], [0], [1]]), axis=1) ** 3),
    "moves": lambda x, y: np.sum(np.flip(x, 0) * np.broadcast_to(y, (3, 4)) + np.expand_dims(x[0], 0) ** 2
                                 + np.squeeze(np.roll(x, 1, axis=1)[None]) * np.tile(y, (3, 1))),
}


def args_for(name: str, dtype: Any = np.float64) -> tuple[np.ndarray, ...]:
    r = rng()
    shapes = {"broadcast": [(4,), (3, 1, 5)], "axes": [(3, 4, 2)], "cumsum": [(3, 4)], "indexing": [(6,)],
              "reshape": [(2, 3)], "matmul": [(3, 4), (4, 3)], "maximum": [(5,), (5,)],
              "batched_matmul": [(2, 3, 4), (5, 1, 4, 3)], "vector_matmul": [(3, 4), (4,)], "extremes": [(3, 4)],
              "where": [(3, 4), (3,)], "concatenate": [(2, 4), (4,)], "moves": [(3, 4), (4,)],
              "statistics": [(3, 4)], "sort_clip": [(3, 4), (4,)], "stacks": [(3, 4), (4,)]}.get(name, [(7,)])
    return tuple(r.uniform(0.2, 1.2, s).astype(dtype) for s in shapes)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_device_tape_gradients_pass_test_gradients(backend: str, name: str) -> None:
    args = args_for(name)
    gradtest.test_gradients(FUNCTIONS[name], *args, backends=[backend, "reverse"])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_device_tape_values_are_numpys(emu: cuda.DeviceLibrary, name: str) -> None:
    # the recorded forward pass computes f itself (a wrong value would make a wrong gradient of
    # another function look right)
    args = args_for(name)
    tape = cuda_reverse.DeviceTape(cuda_reverse.Memory(emu), np.float64)
    out = FUNCTIONS[name](*[tape.leaf(a) for a in args])
    np.testing.assert_allclose(np.asarray(out.value), FUNCTIONS[name](*args), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["chain", "broadcast", "indexing", "matmul", "batched_matmul", "extremes",
                                  "concatenate"])
def test_device_tape_float32(backend: str, name: str) -> None:
    gradtest.test_gradients(FUNCTIONS[name], *args_for(name, np.float32), backends=[backend])


def test_array_outputs_go_through_the_cotangent(backend: str) -> None:
    x = rng().uniform(0.2, 1.2, (3, 4))
    gradtest.test_gradients(lambda x: np.sin(x) * x[0], x, backends=[backend])


def test_matches_the_cpu_reverse_engine_bit_for_bit_on_exact_ops(backend: str) -> None:
    # + - * / sqrt and square are correctly rounded in NumPy and libm alike, and the sweep's
    # arithmetic is the CPU tape's, so the two gradients agree to the bit
    def f(x: Any, y: Any) -> Any:
        return np.sum(np.sqrt(x * y + 1.0) / (x - 3.0) + np.square(y) * 0.25)

    x, y = rng().uniform(0.2, 1.2, (2, 50))
    dev = gradtest.gradient(f, x, y, backend=backend)
    cpu = gradtest.gradient(f, x, y, backend="reverse")
    for d, c in zip(dev, cpu):
        assert np.array_equal(d, c)


def test_ties_of_max_split_evenly_as_on_the_cpu(backend: str) -> None:
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [-0.0, 0.0, -1.0]])
    f = lambda x: np.sum(np.max(x, axis=1) * np.array([1.0, 2.0, 3.0])) + np.min(x)  # noqa: E731
    (dev,) = gradtest.gradient(f, x, backend=backend)
    (cpu,) = gradtest.gradient(f, x, backend="reverse")
    assert np.array_equal(dev, cpu)
    assert np.array_equal(dev[1], [2 / 3] * 3)


def test_matmul_refuses_shapes_that_do_not_align(emu: cuda.DeviceLibrary) -> None:
    with pytest.raises(ValueError, match="do not align"):
        cuda_reverse.device_gradient(lambda a: np.sum(a @ np.ones(5)), np.ones((2, 3)), memory=cuda_reverse.Memory(emu))
    with pytest.raises(NotImplementedError, match="numpy.dot of arrays of more than 2"):
        cuda_reverse.device_gradient(lambda a: np.sum(np.dot(a, a)), np.ones((2, 2, 2)),
                                     memory=cuda_reverse.Memory(emu))


def test_number_constants_are_uploaded_once_and_keep_their_sign(emu: cuda.DeviceLibrary) -> None:
    tape = cuda_reverse.DeviceTape(cuda_reverse.Memory(emu), np.float64)
    leaf = tape.leaf(np.ones(3))
    plus, minus, again = leaf * 0.0, leaf * -0.0, leaf * 0.0
    assert not np.signbit(plus.value).any() and np.signbit(minus.value).all()
    assert np.array_equal(again.value, plus.value)
    assert len(tape._numbers) == 2  # 0.0 and -0.0, each uploaded once


def test_large_sums_take_the_block_reductions(backend: str) -> None:
    # 40000 elements per sum: the two-launch reduction with scratch (forward) and, for the
    # column sums, one block per output
    x = rng().uniform(0.2, 1.2, (200, 200))

    def f(x: Any) -> Any:
        return np.sum(np.sin(x)) * np.sum(x) + np.sum(np.sum(x * x, axis=0) ** 2)

    (dev,) = gradtest.gradient(f, x, backend=backend)
    (cpu,) = gradtest.gradient(f, x, backend="reverse")
    np.testing.assert_allclose(dev, cpu, rtol=1e-12)


def test_the_sweep_makes_no_host_round_trip(emu: cuda.DeviceLibrary) -> None:
    memory = CountingMemory(emu)
    x = memory.upload(rng().uniform(0.2, 1.2, (4, 5)))
    tape = cuda_reverse.DeviceTape(memory, np.float64)
    leaf = tape.leaf(x)
    out = np.sum(np.exp(leaf) * leaf[1:3].sum(axis=0) + np.cumsum(leaf, axis=0))
    before = tape.launches
    memory.downloads = 0
    (g,) = tape.backward(out, [leaf])
    assert memory.downloads == 0
    assert tape.launches > before  # the VJPs were launches
    (expected,) = gradtest.gradient(
        lambda x: np.sum(np.exp(x) * x[1:3].sum(axis=0) + np.cumsum(x, axis=0)), memory.download(x),
        backend="reverse")
    np.testing.assert_allclose(g, expected, rtol=1e-13)


@pytest.mark.parametrize("name", ["batched_matmul", "vector_matmul", "extremes", "where", "concatenate", "moves",
                                  "statistics", "sort_clip", "stacks"])
def test_the_sweeps_of_the_other_functions_make_no_host_round_trip(emu: cuda.DeviceLibrary, name: str) -> None:
    memory = CountingMemory(emu)
    tape = cuda_reverse.DeviceTape(memory, np.float64)
    leaves = [tape.leaf(memory.upload(a)) for a in args_for(name)]
    out = FUNCTIONS[name](*leaves)
    memory.downloads = 0
    tape.backward(out, leaves)
    assert memory.downloads == 0


def test_device_gradient_returns_one_gradient_per_leaf(emu: cuda.DeviceLibrary) -> None:
    x, y = rng().uniform(0.2, 1.2, (2, 6))
    gx, gy = cuda_reverse.device_gradient(lambda x, y: np.sum(x * y * y), x, y, memory=cuda_reverse.Memory(emu))
    np.testing.assert_allclose(gx, y * y)
    np.testing.assert_allclose(gy, 2 * x * y)
    # a leaf that does not reach the output gets zeros, computed, not assumed
    g0, g1 = cuda_reverse.device_gradient(lambda x, y: np.sum(x), x, y, memory=cuda_reverse.Memory(emu))
    assert np.array_equal(g1, np.zeros(6)) and np.array_equal(g0, np.ones(6))


@pytest.mark.parametrize("f, name", [
    (lambda x: np.sum(np.partition(x, 2)), "numpy.partition"),
    (lambda x: np.var(x, ddof=6), "numpy.var with ddof >= the number of elements"),
    (lambda x: np.sum(np.add.reduce(x)), "numpy.add.reduce"),
    (lambda x: np.sum(np.sin(x, dtype=np.float64)), "numpy.sin with dtype="),
    (lambda x: np.sum(np.floor(x)), "numpy.floor"),
    (lambda x: np.sum(np.where(x, x, 0.0)), "numpy.where with a float condition"),
    (lambda x: np.sum(np.concatenate([x, x], out=np.empty(12))), "numpy.concatenate with out="),
    (lambda x: np.sum(x) if x.sum() else 0.0, "bool()"),
    (lambda x: np.prod(x), "numpy.prod"),
])
def test_unsupported_functions_raise_naming_the_function(emu: cuda.DeviceLibrary, backend: str, f: Any,
                                                         name: str) -> None:
    x = rng().uniform(0.2, 1.2, 6)
    with pytest.raises(NotImplementedError, match=name.replace("(", r"\(").replace(")", r"\)")):
        cuda_reverse.device_gradient(f, x, memory=cuda_reverse.Memory(emu))
    report = gradtest.check_gradients(f, x, backends=[backend])
    assert not report.passed


def test_leaving_the_tape_is_refused(emu: cuda.DeviceLibrary) -> None:
    x = rng().uniform(0.2, 1.2, 4)
    with pytest.raises(NotImplementedError, match="float"):
        cuda_reverse.device_gradient(lambda x: float(np.sum(x)), x, memory=cuda_reverse.Memory(emu))
    with pytest.raises(NotImplementedError, match="several dtypes"):
        cuda_reverse.device_gradient(lambda x, y: np.sum(x * y), x, x.astype(np.float32),
                                     memory=cuda_reverse.Memory(emu))


def test_cuda_reverse_is_registered_and_needs_device_leaves() -> None:
    from gradtest.backends import available_backends

    assert "cuda_reverse" in available_backends()
    assert get_backend("cuda_reverse").array_types == ("cupy", "torch", "cuda_array")
    report = gradtest.check_gradients(lambda x: np.sum(x ** 2), rng().uniform(0.2, 1.2, 5))
    assert report.passed and "cuda_reverse" not in report.outcomes
    # one clause with the other framework backends where torch and JAX are installed
    note = next(n for n in report.notes if n.startswith("not run by default"))
    clause = note[note.index("cuda_reverse ("):]
    assert "f on " in clause and "CuPy arrays" in clause and "device arrays; args[0] is a NumPy array)" in clause


class _FakeCupyArray:
    """Just enough of a CuPy array for gradtest's leaf handling (its type's module is "cupy")."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = np.array(data)
        self.dtype = self._data.dtype
        self.shape = self._data.shape
        self.device = types.SimpleNamespace(id=0)


_FakeCupyArray.__module__ = "cupy"


def test_cupy_leaves_reach_the_device_tape(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks: a CuPy leaf is differentiated (its host copy is the ground truth's), the CPU
    backends do not run on it, and the device tape gets it."""
    fake = types.ModuleType("cupy")
    fake.ndarray = _FakeCupyArray
    fake.asnumpy = lambda a: np.array(a._data, copy=True)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    from gradtest._tree import flatten_args

    leaf = _FakeCupyArray(rng().uniform(0.2, 1.2, 8))
    flat = flatten_args((leaf, 2.0))
    assert flat.differentiable == [0]
    assert flat.adapters[0].framework == "cupy" and flat.adapters[0].device == 0
    assert isinstance(flat.leaves[0], np.ndarray) and np.array_equal(flat.leaves[0], leaf._data)

    def f(x: Any, c: float) -> Any:
        return np.sum(np.sin(x) * c)

    report = gradtest.check_gradients(f, leaf, 2.0, backends=[backend])
    assert report.passed, report
    if cuda.available():  # a GPU machine (the fake CuPy array is not device memory): stop here
        return
    # no GPU: no backend runs on a CuPy array by default, and the check says so
    from gradtest._check import NoBackendWarning

    with pytest.warns(NoBackendWarning, match="no backend left to test"):
        default = gradtest.check_gradients(f, leaf, 2.0)
    notes = " ".join(default.notes)
    assert "forward, reverse" in notes and "(they run f on NumPy arrays" in notes
    assert "; args[0] is a CuPy array)" in notes
    assert "cuda_reverse (not applicable" in notes


def test_emulated_library_path_exists(emu: cuda.DeviceLibrary) -> None:
    assert Path(emu.path).exists() and emu.emulated


@pytest.fixture()
def fake_device(emu: cuda.DeviceLibrary, monkeypatch: pytest.MonkeyPatch) -> cuda.DeviceLibrary:
    """The device path as a GPU machine has it, on the emulation: cuda.available() is true and
    the device library is the emulated one, so the default backend selection and the default
    cuda_reverse backend run here."""
    monkeypatch.setattr(cuda, "available", lambda: True)
    monkeypatch.setattr(cuda, "device_library", lambda: emu)
    return emu


def _fake_cuda_tensor(data: np.ndarray) -> Any:
    """A torch tensor that says it is on CUDA (its memory is host memory, which the emulated
    kernels read): what gradtest sees of a torch CUDA leaf, on a machine without a GPU."""
    torch = pytest.importorskip("torch")

    class FakeCudaTensor(torch.Tensor):
        @property
        def is_cuda(self) -> bool:
            return True

    FakeCudaTensor.__module__ = "torch"  # gradtest tells a framework's arrays by their type's module
    return torch.tensor(data).as_subclass(FakeCudaTensor)


def test_torch_cuda_leaves_pick_the_device_backend_by_default(fake_device: cuda.DeviceLibrary) -> None:
    torch = pytest.importorskip("torch")
    x = _fake_cuda_tensor(rng().uniform(0.2, 1.2, (3, 4)))
    w = torch.tensor(rng().uniform(0.2, 1.2, (4, 2)))  # a constant, copied to the device once

    def f(x: Any) -> Any:  # torch code: functions, methods and operators the device tape records
        h = torch.tanh(x @ w) * torch.full((1, 2), 2.0, dtype=torch.float64, device=x.device) - x.sum(dim=1, keepdim=True).exp() / 3.0
        return torch.sum(h.transpose(0, 1).cumsum(1) ** 2) + (1.0 - x).pow(3).mean() + x.flatten()[::2].sum()

    report = gradtest.check_gradients(f, x)
    assert report.outcomes["cuda_reverse"].status == "pass", report
    assert report.outcomes["torch"].status == "pass"  # on CPU copies, as the note says
    F = torch.nn.functional

    def g(x: Any) -> Any:  # the torch functions with a NumPy composition, and torch's own defaults
        y = torch.sigmoid(x) + F.relu(x - 0.7) + F.softplus(x, beta=2.0) + torch.clamp(x, min=0.5)
        z = torch.cat([y, torch.stack([x[:, 0], x[:, 1]], dim=1)], dim=1)
        return (torch.sum(torch.where(x > 0.6, z[:, :4], -x) ** 2) + torch.amax(z, dim=1).sum() + x.var()
                + torch.std(x, dim=0, keepdim=True).sum() + torch.max(x) + torch.max(x, 1.0 - x).sum())

    report = gradtest.check_gradients(g, x)
    assert report.outcomes["cuda_reverse"].status == "pass", report
    assert report.outcomes["torch"].status == "pass", report
    notes = " ".join(report.notes)
    assert "device arrays (args[0])" in notes and "host engines forward and reverse do not run" in notes
    assert "args[0] is a torch CUDA tensor" in notes  # why forward and reverse did not run
    assert "forward" not in report.outcomes and "reverse" not in report.outcomes


def test_a_wrong_gradient_on_torch_cuda_leaves_is_caught(fake_device: cuda.DeviceLibrary,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    # a device tape whose tanh VJP is sin's: the check must fail, not pass
    real = cuda_reverse._elementwise
    monkeypatch.setattr(cuda_reverse, "_elementwise", lambda tape, name, inputs: real(
        tape, "sin" if name == "tanh" else name, inputs))
    x = _fake_cuda_tensor(rng().uniform(0.2, 1.2, 6))
    report = gradtest.check_gradients(lambda x: torch.sum(torch.tanh(x)), x)
    assert report.outcomes["cuda_reverse"].status == "fail" and not report.passed


def test_torch_code_the_device_tape_cannot_run_leaves_cuda_reverse_not_applicable(
        fake_device: cuda.DeviceLibrary) -> None:
    torch = pytest.importorskip("torch")
    x = _fake_cuda_tensor(rng().uniform(0.2, 1.2, 5))
    for f, name in ((lambda x: torch.sum(torch.erf(x) * 2.0), "torch.erf"),
                    (lambda x: (x.softmax(0) * 2.0).sum(), "Tensor.softmax"),
                    (lambda x: torch.nn.functional.gelu(x).sum(), "gelu")):
        report = gradtest.check_gradients(f, x)
        outcome = report.outcomes["cuda_reverse"]
        assert outcome.status == "skipped" and "f calls " in outcome.message and name in outcome.message and "torch code" in outcome.message
        assert report.outcomes["torch"].status == "pass"  # the torch backend checked it
        assert report.passed
    with pytest.raises(cuda_reverse.TorchCodeError, match="torch.erf"):
        cuda_reverse.device_gradient(lambda x: torch.sum(torch.erf(x)), np.ones(3),
                                     memory=cuda_reverse.Memory(fake_device))
    # where NumPy and torch disagree on a method's meaning, torch code gets torch's or a refusal
    assert not hasattr(cuda_reverse.TorchDeviceTracked(np.ones(2), None, 0), "grad_fn")  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="Tensor.prod"):
        cuda_reverse.device_gradient(lambda x: x.prod(), torch.ones(3, dtype=torch.float64),
                                     memory=cuda_reverse.TorchMemory(fake_device, "cpu"))
    with pytest.raises(NotImplementedError, match="torch.max with dim="):
        cuda_reverse.device_gradient(lambda x: x.max(0)[0].sum(), torch.ones((2, 3), dtype=torch.float64),
                                     memory=cuda_reverse.TorchMemory(fake_device, "cpu"))


def test_cupy_leaves_pick_the_device_backend_by_default(fake_device: cuda.DeviceLibrary,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("cupy")
    fake.ndarray = _FakeCupyArray
    fake.asnumpy = lambda a: np.array(a._data, copy=True)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    # CuPy memory as host memory: the emulated kernels read it
    monkeypatch.setattr(cuda_reverse, "CupyMemory", cuda_reverse.Memory)
    leaf = _FakeCupyArray(rng().uniform(0.2, 1.2, (3, 4)))
    report = gradtest.check_gradients(lambda x: np.sum(np.sin(x) @ np.ones(4)), leaf)
    assert list(report.outcomes) == ["cuda_reverse"] and report.passed, report
    assert "device arrays (args[0])" in " ".join(report.notes)
    # a host leaf next to a device leaf: no backend runs both by default, named it uploads it
    w = rng().uniform(0.2, 1.2, 4)
    mixed = gradtest.check_gradients(lambda w, x: np.sum(np.sin(x) @ w), w, leaf, backends=["cuda_reverse"])
    assert mixed.passed, mixed


class _HostDLPack:
    """An array of some other library that speaks DLPack, in CPU memory."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)


class _CudaDLPack(_HostDLPack):
    """A DLPack array that says it is in CUDA memory (its bytes are host memory, which the
    emulated copy reads): what a DLPack producer on a GPU hands over."""

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)


class _NumbaLike:
    """A device array known only by __cuda_array_interface__ (as Numba's)."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self._data.shape, "typestr": self._data.dtype.str, "data": (self._data.ctypes.data, False),
                "strides": None, "version": 3}


def test_a_dlpack_leaf_in_cpu_memory_is_checked_as_a_numpy_array() -> None:
    x = rng().uniform(0.2, 1.2, (2, 3))
    report = gradtest.check_gradients(lambda x: np.sum(np.sin(x) * x), _HostDLPack(x))
    assert report.passed and {"forward", "reverse"} <= set(report.outcomes), report
    np.testing.assert_allclose(report.ground_truth[0], np.cos(x) * x + np.sin(x), rtol=1e-8)
    # an integer DLPack array is held constant (passed to f as it is), as an integer torch tensor
    k = _HostDLPack(np.arange(6).reshape(2, 3))
    const = gradtest.check_gradients(lambda x, k: np.sum(x * np.from_dlpack(k)), x, k)
    assert const.passed and const.ground_truth[1] is None


@pytest.mark.parametrize("kind", [_CudaDLPack, _NumbaLike])
def test_device_leaves_of_other_libraries_go_to_the_device_tape(fake_device: cuda.DeviceLibrary,
                                                                monkeypatch: pytest.MonkeyPatch, kind: Any) -> None:
    fake = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake)  # the tape's memory: CuPy's, host memory here
    monkeypatch.setattr(cuda_reverse, "CupyMemory", cuda_reverse.Memory)
    x = rng().uniform(0.2, 1.2, (3, 4))
    leaf = kind(x)
    report = gradtest.check_gradients(lambda x: np.sum(np.tanh(x @ np.ones(4))), leaf)
    assert list(report.outcomes) == ["cuda_reverse"] and report.passed, report
    notes = " ".join(report.notes)
    assert "device arrays (args[0])" in notes and "args[0] is a device array" in notes
    (expected,) = gradtest.gradient(lambda x: np.sum(np.tanh(x @ np.ones(4))), x, backend="reverse")
    np.testing.assert_allclose(report.ground_truth[0], expected, rtol=1e-7)


def test_a_cuda_dlpack_leaf_without_a_gpu_says_why() -> None:
    if cuda.available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(RuntimeError, match="device path is unavailable"):
        gradtest.check_gradients(lambda x: np.sum(x), _CudaDLPack(np.ones(3)))


def test_the_dlpack_reader_reads_dtype_shape_and_refuses_strided_device_memory(emu: cuda.DeviceLibrary) -> None:
    from gradtest import _dlpack

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert _dlpack.dtype_of(_CudaDLPack(x)) == np.float32
    assert np.array_equal(_dlpack.host_copy(_CudaDLPack(x), emu), x)
    with pytest.raises(NotImplementedError, match="not C-contiguous"):
        _dlpack.host_copy(_CudaDLPack(x.T), emu)
    with pytest.raises(NotImplementedError, match="device type 10"):
        _dlpack.host_copy(type("Rocm", (_HostDLPack,), {"__dlpack_device__": lambda self: (10, 0)})(x), emu)


def test_cupy_memory_adopts_other_libraries_device_arrays_through_cupy_asarray(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cupy.ascontiguousarray takes CuPy arrays only (its docstring: "a (cupy.ndarray)"); an array
    # known by __cuda_array_interface__ (Numba's) goes through cupy.asarray, which adopts it
    class Interface:
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<f8", "data": (0, False), "version": 3}

    def ascontiguousarray(a: Any) -> Any:
        if not isinstance(a, _FakeCupyArray):
            raise TypeError("Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base)")
        return a

    fake = types.ModuleType("cupy")
    fake.ndarray = _FakeCupyArray
    fake.asarray = lambda a: a if isinstance(a, _FakeCupyArray) else _FakeCupyArray(np.zeros(3))
    fake.ascontiguousarray = ascontiguousarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    memory = cuda_reverse.CupyMemory(None)  # type: ignore[arg-type]  # adopt launches nothing
    assert isinstance(memory.adopt(Interface()), _FakeCupyArray)
    leaf = _FakeCupyArray(np.ones(3))
    assert memory.adopt(leaf) is leaf  # a CuPy array: no copy
