"""Reverse mode on the device: the ``"cuda_reverse"`` backend.

f is NumPy-API code, or torch code on PyTorch CUDA tensors (a tracked value answers
``__torch_function__``: the torch functions and methods the tape knows are recorded as their
NumPy counterparts, any other is a :class:`TorchCodeError`, and the backend is then not
applicable). Each differentiated leaf becomes a :class:`DeviceTracked`, whose values live
in device memory; every NumPy call on it launches one of gradtest's device kernels
(``csrc/cuda/kernels.h``) on the caller's current stream and records a node on a
:class:`DeviceTape`. The sweep walks the nodes backwards and launches their VJP kernels:
elementwise VJPs from the shared rules (``op_rules.h``), unbroadcast sums, gather and
scatter-add for indexing, reverse cumulative sums for ``cumsum`` and matrix products through the
array library's cuBLAS. The sweep never copies to the host: only kernel launches (which release
the GIL, through ctypes) and allocations from the array library; comparisons, ``max``/``min`` and
``sort`` read host copies of their operands at record time, in the forward pass. What the device
tape cannot do raises ``NotImplementedError`` naming the function, never a wrong or silent-zero
gradient.

Where device memory comes from is a :class:`Memory`: CuPy (:class:`CupyMemory`), PyTorch CUDA
(:class:`TorchMemory`), or host memory for the CPU emulation of the kernels (:class:`Memory`
itself, tests only). The driver is the same for all three, so the tests run it end to end where
there is no GPU, and a GPU run only swaps the memory.

The ground truth stays gradtest's own finite differences, on the CPU in float64 from host copies
of the device leaves; the gradients are computed on the device and copied back for the
comparison (:func:`device_gradient` returns them on the device, in the caller's array type).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _core, cuda
from ._rules import extreme_weights, var_scale
from ._arraylike import ArrayLike
from .backends import BackendNotApplicable, register_backend

F64, F32 = 0, 1
REDUCE_CHUNK = 8192  # source elements per block-chunk of gtd_unbroadcast (kernels.h)
# the op table's ids and arities, by ufunc name, as the C core reports them (op_rules.h)
_TABLE = _core.op_table()
OP_ID = {entry["name"]: i for i, entry in enumerate(_TABLE)}
_ARITY = {entry["name"]: entry["arity"] for entry in _TABLE}
for _alias, _name in (("absolute", "abs"), ("true_divide", "divide")):
    OP_ID[_alias], _ARITY[_alias] = OP_ID[_name], _ARITY[_name]  # np.abs is the ufunc "absolute"
_NOT_DIFFERENTIABLE = frozenset({"sign"})
# functions of the array's shape only: answered without a node
_SHAPE_FUNCTIONS = {np.shape: lambda x: x.shape, np.ndim: lambda x: x.ndim, np.size: lambda x: x.size}


def _unsupported(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"{what} is not supported by the device reverse backend (cuda_reverse) yet; it supports the "
        "op table's ufuncs with broadcasting, comparisons, sum, mean, max, min, cumsum, matmul and dot, "
        "reshape/ravel/squeeze/expand_dims, transpose, indexing, where, concatenate, stack and the functions "
        "that move elements (flip, roll, take, tile, repeat, broadcast_to, ...)")


class TorchCodeError(NotImplementedError, AttributeError):
    """f called a torch function (or a Tensor method) on a device tape value that the tape cannot
    record. The ``cuda_reverse`` backend reports itself not applicable then (the ``torch``
    backend checks torch code). It is an AttributeError too, so that ``hasattr(x, "grad_fn")``
    and ``getattr(x, name, default)`` answer as for any missing attribute."""


def _torch_code(what: str) -> TorchCodeError:
    return TorchCodeError(
        f"f calls {what}, which the device reverse backend (cuda_reverse) cannot record: it records "
        "NumPy-API code and the torch code it knows (the op table's functions, reductions, matmul, shape "
        "functions, indexing, cat/stack/where...; docs/cuda.rst); the torch backend checks torch code")


class Memory:
    """Device memory for the tape, here host memory: the CPU emulation (tests only).

    Subclasses give the same operations on a device array library. Arrays are always
    C-contiguous.

    Parameters
    ----------
    library : DeviceLibrary
        The kernels, launched on the buffers this memory hands out.
    """

    name = "host memory (the CPU emulation of the device kernels, tests only)"

    def __init__(self, library: cuda.DeviceLibrary) -> None:
        self.lib = library

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        return np.empty(shape, dtype)

    def ptr(self, a: Any) -> int:
        return a.ctypes.data

    def stream(self) -> int | None:
        """The caller's current stream (None: the legacy default stream)."""
        return None

    def upload(self, host: np.ndarray) -> Any:
        return np.array(host, order="C", copy=True)

    def download(self, a: Any) -> np.ndarray:
        return np.array(a, copy=True)

    def adopt(self, a: Any) -> Any:
        """The caller's array as a C-contiguous array of this memory, without a copy when it is
        one already (the tape never writes its leaves)."""
        return np.ascontiguousarray(np.asarray(a))

    def matmul(self, a: Any, b: Any) -> Any:
        """a @ b, C-contiguous (cuBLAS, through the array library, on a device)."""
        return np.ascontiguousarray(np.matmul(a, b))

    def transpose(self, a: Any) -> Any:
        return a.swapaxes(-1, -2)

    def reshape(self, a: Any, shape: tuple[int, ...]) -> Any:
        return a.reshape(shape)

    def wrap_result(self, a: Any) -> Any:
        """A gradient as the caller's array type."""
        return a


class CupyMemory(Memory):
    """CuPy device memory; kernels go on CuPy's current stream."""

    name = "CuPy"

    def __init__(self, library: cuda.DeviceLibrary) -> None:
        super().__init__(library)
        import cupy

        self.cupy = cupy

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        return self.cupy.empty(shape, dtype)

    def ptr(self, a: Any) -> int:
        return int(a.data.ptr)

    def stream(self) -> int | None:
        return int(self.cupy.cuda.get_current_stream().ptr) or None

    def upload(self, host: np.ndarray) -> Any:
        return self.cupy.ascontiguousarray(self.cupy.asarray(host))

    def download(self, a: Any) -> np.ndarray:
        return self.cupy.asnumpy(a)

    def adopt(self, a: Any) -> Any:
        # cupy.ascontiguousarray takes CuPy arrays only; cupy.asarray first adopts any
        # __cuda_array_interface__ array (Numba's) without a copy
        return self.cupy.ascontiguousarray(self.cupy.asarray(a))

    def matmul(self, a: Any, b: Any) -> Any:
        return self.cupy.ascontiguousarray(self.cupy.matmul(a, b))


class TorchMemory(Memory):
    """PyTorch CUDA memory on one device; kernels go on torch's current stream there."""

    name = "PyTorch CUDA"

    def __init__(self, library: cuda.DeviceLibrary, device: Any) -> None:
        super().__init__(library)
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def _dtype(self, dtype: np.dtype) -> Any:
        return self.torch.float64 if np.dtype(dtype) == np.float64 else self.torch.float32

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def ptr(self, a: Any) -> int:
        return int(a.data_ptr())

    def stream(self) -> int | None:
        if self.device.type != "cuda":  # CPU tensors over the emulated kernels (tests only): no stream
            return None
        return int(self.torch.cuda.current_stream(self.device).cuda_stream) or None

    def upload(self, host: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(host)).to(self.device).contiguous()

    def download(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy().copy()

    def adopt(self, a: Any) -> Any:
        return a.detach().to(self.device).contiguous()

    def matmul(self, a: Any, b: Any) -> Any:
        return self.torch.matmul(a, b).contiguous()

    def transpose(self, a: Any) -> Any:
        return a.transpose(-1, -2)

    def reshape(self, a: Any, shape: tuple[int, ...]) -> Any:
        return a.reshape(shape)


def _strides(out_shape: tuple[int, ...], shape: tuple[int, ...]) -> list[int]:
    """Element strides of a contiguous operand of `shape` read at `out_shape` (0: broadcast)."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    st, acc = [0] * len(padded), 1
    for d in range(len(padded) - 1, -1, -1):
        st[d] = 0 if padded[d] == 1 and out_shape[d] != 1 else acc
        acc *= padded[d]
    return st


def layout(out_shape: tuple[int, ...], a_shape: tuple[int, ...], b_shape: tuple[int, ...] = ()) -> cuda.Layout:
    """The gtd_layout of an op writing `out_shape` from operands of the two shapes."""
    if len(out_shape) > cuda.GTD_MAXDIM:
        raise _unsupported(f"an array of {len(out_shape)} dimensions (at most {cuda.GTD_MAXDIM})")
    lay = cuda.Layout()
    lay.ndim = len(out_shape)
    for d, (s, sa, sb) in enumerate(zip(out_shape, _strides(out_shape, a_shape), _strides(out_shape, b_shape))):
        lay.shape[d], lay.sa[d], lay.sb[d] = s, sa, sb
    return lay


class DeviceTape:
    """The nodes of one recording and their VJPs, on one :class:`Memory`, in one dtype.

    Parameters
    ----------
    memory : Memory
        Where the buffers live.
    dtype : numpy.dtype
        float64 or float32: the dtype of every tracked value.
    dialect : {"numpy", "torch"}
        Whose meaning the methods of tracked values have: NumPy's, or torch's for f written
        against torch (PyTorch CUDA leaves), where ``x.transpose(0, 1)`` swaps two dimensions.
    """

    def __init__(self, memory: Memory, dtype: Any, dialect: str = "numpy") -> None:
        if dialect not in ("numpy", "torch"):
            raise ValueError(f"dialect: expected 'numpy' or 'torch', got {dialect!r}")
        # the methods of tracked values follow NumPy's or torch's meaning (x.transpose(0, 1))
        self.tracked = TorchDeviceTracked if dialect == "torch" else DeviceTracked
        self.memory = memory
        self.lib = memory.lib
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise _unsupported(f"dtype {self.dtype}")
        self.code = F64 if self.dtype == np.float64 else F32
        self.vjps: list[Callable[[Any], None] | None] = []
        self.shapes: list[tuple[int, ...]] = []
        self.grads: dict[int, Any] = {}
        self.launches = 0
        # scratch buffers of launches in flight, kept alive with the tape
        self.keep: list[Any] = []
        # Python-number operands, uploaded once per value
        self._numbers: dict[tuple[float, float], Any] = {}

    def launch(self, name: str, *args: Any) -> None:
        """Calls the launcher gtd_<name> on the current stream; raises DeviceError on a failure."""
        code = getattr(self.lib, name)(self.memory.stream(), self.code, *args)
        self.launches += 1
        self.lib.check(code, f"gtd_{name}")

    def reduce(self, n: int, m: int, lay: cuda.Layout, src: Any, dst: Any, accumulate: int) -> None:
        """dst (m elements) (+)= src (n) summed as lay says (gtd_unbroadcast), with scratch for
        the two-launch reduction when each output sums many elements."""
        per = n // m if m else 0
        chunks = min(per // REDUCE_CHUNK, 4096) if per >= 2 * REDUCE_CHUNK else 0
        scratch = self.memory.empty((m * chunks,), self.dtype) if chunks else None
        if scratch is not None:
            self.keep.append(scratch)
        self.launch("unbroadcast", n, m, lay, self.memory.ptr(src), self.memory.ptr(dst), accumulate,
                    None if scratch is None else self.memory.ptr(scratch), m * chunks)

    def node(self, value: Any, vjp: Callable[[Any], None] | None) -> DeviceTracked:
        self.vjps.append(vjp)
        self.shapes.append(tuple(value.shape))
        return self.tracked(value, self, len(self.vjps) - 1)

    def leaf(self, value: Any) -> DeviceTracked:
        return self.node(value, None)

    def constant(self, x: Any) -> Any:
        """A non-tracked operand as a contiguous device array of the tape's dtype."""
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            value = float(x)
            key = (value, math.copysign(1.0, value))  # -0.0 is not 0.0 (arctan2, division)
            if key not in self._numbers or math.isnan(value):
                self._numbers[key] = self.memory.upload(np.asarray(value, dtype=self.dtype))
            return self._numbers[key]
        if isinstance(x, np.ndarray) or np.isscalar(x):
            host = np.asarray(x)
            if host.dtype.kind not in "fiub":
                raise _unsupported(f"an operand of dtype {host.dtype}")
            return self.memory.upload(host.astype(self.dtype))
        if type(x).__module__.partition(".")[0] == "torch" and hasattr(x, "detach"):
            host = x.detach().cpu().numpy()  # a torch constant, CPU or CUDA: copied once, at record time
            return self.memory.upload(host.astype(self.dtype))
        if hasattr(x, "__cuda_array_interface__"):
            host = cuda.host_copy(x, self.lib)  # a device constant: copied once, at record time
            return self.memory.upload(host.astype(self.dtype))
        raise _unsupported(f"an operand of type {type(x).__name__}")

    def target(self, node: int) -> tuple[Any, int]:
        """The gradient buffer of a node for a VJP that writes every element, and its
        accumulate flag: 0 for the first contribution (the buffer is new and is overwritten,
        which saves the zero fill), 1 after."""
        g = self.grads.get(node)
        if g is None:
            g = self.memory.empty(self.shapes[node], self.dtype)
            self.grads[node] = g
            return g, 0
        return g, 1

    def grad(self, node: int) -> Any:
        """The gradient buffer of a node, zero-filled on first use (for VJPs that add into some
        elements only, such as a scatter-add, and for leaves that nothing reached)."""
        g = self.grads.get(node)
        if g is None:
            g = self.memory.empty(self.shapes[node], self.dtype)
            self.launch("fill", int(np.prod(self.shapes[node], dtype=np.int64)), 0.0, self.memory.ptr(g))
            self.grads[node] = g
        return g

    def backward(self, out: DeviceTracked, leaves: Sequence[DeviceTracked]) -> list[Any]:
        """The gradients of the scalar ``out`` at ``leaves``, as device arrays (zero where a leaf
        does not reach out). No host round trip: launches only."""
        if out.size != 1:
            raise ValueError(f"f reduced to an array of shape {out.shape}, not a scalar")
        self.grads = {}
        seed, _ = self.target(out.node)
        self.launch("fill", 1, 1.0, self.memory.ptr(seed))
        for node in range(out.node, -1, -1):
            vjp = self.vjps[node]
            g = self.grads.get(node)
            if vjp is not None and g is not None:
                vjp(g)
        return [self.grad(leaf.node) for leaf in leaves]


def _operand(tape: DeviceTape, x: Any) -> tuple[Any, int | None]:
    if isinstance(x, DeviceTracked):
        if x.tape is not tape:
            raise _unsupported("mixing values of two device tapes")
        return x.value, x.node
    return tape.constant(x), None


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _elementwise(tape: DeviceTape, name: str, inputs: Sequence[Any]) -> DeviceTracked:
    op = OP_ID[name]
    m = tape.memory
    ops = [_operand(tape, x) for x in inputs]
    shapes = [tuple(v.shape) for v, _ in ops]
    out_shape = tuple(np.broadcast_shapes(*shapes))
    n = _size(out_shape)
    a, b = ops[0][0], ops[1][0] if len(ops) == 2 else None
    lay = layout(out_shape, shapes[0], shapes[1] if len(ops) == 2 else ())
    y = m.empty(out_shape, tape.dtype)
    pa, pb = m.ptr(a), (m.ptr(b) if b is not None else None)
    tape.launch("ew_value", op, n, lay, pa, pb, m.ptr(y))

    def vjp(gy: Any) -> None:
        for k, (value, node) in enumerate(ops):
            if node is None or name in _NOT_DIFFERENTIABLE:
                continue  # a constant, or sign: its gradient is zero by definition
            g, acc = tape.target(node)
            if shapes[k] == out_shape:
                tape.launch("ew_vjp", op, k, n, lay, pa, pb, m.ptr(y), m.ptr(gy), m.ptr(g), acc)
            else:
                full = m.empty(out_shape, tape.dtype)
                tape.launch("ew_vjp", op, k, n, lay, pa, pb, m.ptr(y), m.ptr(gy), m.ptr(full), 0)
                tape.reduce(n, _size(shapes[k]), layout(out_shape, shapes[k]), full, g, acc)

    return tape.node(y, vjp)


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % ndim if ndim else 0 for a in axes))


def _sum(tape: DeviceTape, x: DeviceTracked, axis: Any = None, keepdims: bool = False) -> DeviceTracked:
    m = tape.memory
    axes = _axes(axis, x.ndim)
    kept = tuple(1 if d in axes else s for d, s in enumerate(x.shape))
    final = kept if keepdims else tuple(s for d, s in enumerate(x.shape) if d not in axes)
    n, k = x.size, _size(kept)
    y = m.empty(kept, tape.dtype)
    tape.reduce(n, k, layout(x.shape, kept), x.value, y, 0)
    y = m.reshape(y, final)

    def vjp(gy: Any) -> None:
        g, acc = tape.target(x.node)
        if not acc:  # the broadcast copy straight into the new buffer
            tape.launch("ew_value", OP_ID["positive"], n, layout(x.shape, kept), m.ptr(gy), None, m.ptr(g))
            return
        spread = m.empty(x.shape, tape.dtype)
        tape.launch("ew_value", OP_ID["positive"], n, layout(x.shape, kept), m.ptr(gy), None, m.ptr(spread))
        tape.launch("copy", n, m.ptr(spread), m.ptr(g), 1)

    return tape.node(y, vjp)


def _cumsum(tape: DeviceTape, x: DeviceTracked, axis: Any = None) -> DeviceTracked:
    m = tape.memory
    if axis is None:
        x = _reshape(tape, x, (x.size,))
        axis = 0
    axis = int(axis) % x.ndim
    outer, length, inner = _size(x.shape[:axis]), x.shape[axis], _size(x.shape[axis + 1:])
    y = m.empty(x.shape, tape.dtype)
    tape.launch("cumsum", outer, length, inner, m.ptr(x.value), m.ptr(y), 0, 0)

    def vjp(gy: Any) -> None:
        g, acc = tape.target(x.node)
        tape.launch("cumsum", outer, length, inner, m.ptr(gy), m.ptr(g), 1, acc)

    return tape.node(y, vjp)


def _reshape(tape: DeviceTape, x: DeviceTracked, shape: Any) -> DeviceTracked:
    m = tape.memory
    new_shape = tuple(np.empty(x.shape, dtype=np.int8).reshape(shape).shape)
    y = m.reshape(x.value, new_shape)  # a view of contiguous memory

    def vjp(gy: Any) -> None:
        g, acc = tape.target(x.node)
        tape.launch("copy", x.size, m.ptr(gy), m.ptr(g), acc)

    return tape.node(y, vjp)


def _index(tape: DeviceTape, x: DeviceTracked, key: Any) -> DeviceTracked:
    """x[key] as a gather of flat indices computed on the host at record time; its VJP is a
    scatter-add (repeated indices accumulate)."""
    if isinstance(key, DeviceTracked) or hasattr(key, "__cuda_array_interface__"):
        raise _unsupported("indexing with a device array (index with NumPy arrays or integers)")
    if type(key).__module__.partition(".")[0] == "torch" and hasattr(key, "numpy"):
        key = key.numpy()  # a mask of torch code's comparisons, on the CPU
    return _gather(tape, x, np.arange(x.size, dtype=np.int64).reshape(x.shape)[key])


def _gather(tape: DeviceTape, x: DeviceTracked, flat: Any) -> DeviceTracked:
    """y = x.flat[flat] (flat: host int64 indices of y's shape); the VJP scatter-adds."""
    m = tape.memory
    out_shape = tuple(np.shape(flat))
    idx = m.upload(np.ascontiguousarray(flat, dtype=np.int64).reshape(-1))
    n = int(np.size(flat))
    y = m.empty(out_shape, tape.dtype)
    tape.launch("gather", n, m.ptr(idx), m.ptr(x.value), m.ptr(y))

    def vjp(gy: Any) -> None:
        tape.launch("scatter_add", n, m.ptr(idx), m.ptr(gy), m.ptr(tape.grad(x.node)))

    return tape.node(y, vjp)


def _matmul(tape: DeviceTape, a_in: Any, b_in: Any) -> DeviceTracked:
    """a @ b with NumPy's matmul semantics: stacks of matrices broadcast against each other, and a
    1-d operand is a row (a) or column (b) vector whose dimension the result drops. The products
    go through the array library (cuBLAS); each VJP product is summed back over the batch
    dimensions its operand was broadcast along (the unbroadcast kernel)."""
    m = tape.memory
    (a, na), (b, nb) = _operand(tape, a_in), _operand(tape, b_in)
    if a.ndim == 0 or b.ndim == 0:
        raise _unsupported("numpy.matmul of a 0-d array (use multiply)")
    a_shape = (1, *a.shape) if a.ndim == 1 else tuple(a.shape)  # NumPy's promotion of vectors
    b_shape = (*b.shape, 1) if b.ndim == 1 else tuple(b.shape)
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align "
                         f"({a_shape[-1]} != {b_shape[-2]})")
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    full = (*batch, a_shape[-2], b_shape[-1])
    a2, b2 = m.reshape(a, a_shape), m.reshape(b, b_shape)
    # the result drops the dimension of each vector operand, as NumPy's
    out_shape = (*batch, *full[-2:-1][:a.ndim - 1], *full[-1:][:b.ndim - 1])
    y = m.reshape(m.matmul(a2, b2), out_shape)

    def vjp(gy: Any) -> None:
        g2 = m.reshape(gy, full)
        for node, shape, product in ((na, a_shape, lambda: m.matmul(g2, m.transpose(b2))),
                                     (nb, b_shape, lambda: m.matmul(m.transpose(a2), g2))):
            if node is None:
                continue
            contribution = product()  # (*batch, rows, cols), contiguous
            g, acc = tape.target(node)
            n = _size(tuple(contribution.shape))
            if tuple(contribution.shape) == shape:
                tape.launch("copy", n, m.ptr(contribution), m.ptr(g), acc)
            else:  # the operand was broadcast along batch dimensions: sum them back
                tape.reduce(n, _size(shape), layout(tuple(contribution.shape), shape), contribution, g, acc)

    return tape.node(y, vjp)


def _moves_many(tape: DeviceTape, inputs: Sequence[Any], place: Callable[..., Any]) -> DeviceTracked:
    """A function that only moves elements of several arrays (concatenate, stack, where with a
    host condition): ``place`` applied to host arrays of element ids (source k's ids numbered
    after source k-1's) gives each output element's source element. Each source then takes a
    gather (its elements the output reads) and a scatter into the output, which is filled with
    -0.0 first so that the scatter's add is exact for every value; the VJP runs the two the
    other way round (the scatter-add accumulates elements read several times)."""
    m = tape.memory
    ops = [_operand(tape, x) for x in inputs]
    sizes = [_size(tuple(v.shape)) for v, _ in ops]
    starts = np.cumsum([0, *sizes])
    ids = [np.arange(starts[k], starts[k + 1], dtype=np.int64).reshape(tuple(v.shape)) for k, (v, _) in enumerate(ops)]
    out_ids = np.asarray(place(*ids))
    flat = out_ids.reshape(-1)
    source = np.searchsorted(starts, flat, side="right") - 1
    y = m.empty(tuple(out_ids.shape), tape.dtype)
    tape.launch("fill", flat.size, -0.0, m.ptr(y))
    parts = []
    for k, (value, node) in enumerate(ops):
        positions = np.nonzero(source == k)[0]
        if positions.size == 0:
            continue
        pos, src = m.upload(positions.astype(np.int64)), m.upload(flat[positions] - starts[k])
        moved = m.empty((positions.size,), tape.dtype)
        tape.launch("gather", positions.size, m.ptr(src), m.ptr(value), m.ptr(moved))
        tape.launch("scatter_add", positions.size, m.ptr(pos), m.ptr(moved), m.ptr(y))
        parts.append((node, positions.size, pos, src))

    def vjp(gy: Any) -> None:
        for node, count, pos, src in parts:
            if node is None:
                continue
            moved = m.empty((count,), tape.dtype)
            tape.launch("gather", count, m.ptr(pos), m.ptr(gy), m.ptr(moved))
            tape.launch("scatter_add", count, m.ptr(src), m.ptr(moved), m.ptr(tape.grad(node)))

    return tape.node(y, vjp)


def _extreme(tape: DeviceTape, x: DeviceTracked, reduce: Callable[..., Any], axis: Any,
             keepdims: bool) -> DeviceTracked:
    """max or min over axes. The derivative weights are the CPU engine's rule
    (``gradtest._rules.extreme_weights``: ties split evenly, NaN wins), computed from a host copy
    of x at record time and uploaded; the VJP is the broadcast of the cotangent times them (the
    chain rule of op_rules.h, through the multiply op's VJP)."""
    m = tape.memory
    if x.size == 0:
        raise ValueError(f"zero-size array to reduction operation {reduce.__name__} which has no identity")
    axes = _axes(axis, x.ndim)
    host = m.download(x.value)
    peak = np.asarray(reduce(host, axis=axes, keepdims=True))
    weights = m.upload(np.ascontiguousarray(extreme_weights(host, peak, axes), dtype=tape.dtype))
    kept = tuple(peak.shape)
    final = kept if keepdims else tuple(s for d, s in enumerate(x.shape) if d not in axes)
    y = m.reshape(m.upload(peak.astype(tape.dtype)), final)
    n = x.size
    full = layout(x.shape, x.shape, x.shape)

    def vjp(gy: Any) -> None:
        spread = m.empty(x.shape, tape.dtype)
        tape.launch("ew_value", OP_ID["positive"], n, layout(x.shape, kept), m.ptr(gy), None, m.ptr(spread))
        g, acc = tape.target(x.node)
        tape.launch("ew_vjp", OP_ID["multiply"], 0, n, full, m.ptr(x.value), m.ptr(weights), m.ptr(spread),
                    m.ptr(spread), m.ptr(g), acc)

    return tape.node(y, vjp)


def _public(func: Any) -> str:
    module = getattr(func, "__module__", None) or "numpy"
    return f"{module.split('.')[0]}.{getattr(func, '__name__', repr(func))}"


_COMPARISONS = frozenset({"greater", "greater_equal", "less", "less_equal", "equal", "not_equal"})


def _compare(tape: DeviceTape, ufunc: np.ufunc, inputs: Sequence[Any]) -> Any:
    """A comparison of tracked values: a host NumPy bool array (a CPU torch tensor on a torch
    tape; a constant, for where and indexing), from host copies of the operands taken at record
    time; the sweep makes no copy."""
    host = [tape.memory.download(x.value) if isinstance(x, DeviceTracked)
            else (cuda.host_copy(x, tape.lib) if hasattr(x, "__cuda_array_interface__") else x) for x in inputs]
    result = np.asarray(ufunc(*host))
    if tape.tracked is TorchDeviceTracked:  # torch code passes it to torch.where: a CPU bool tensor
        return sys.modules["torch"].from_numpy(result)
    return result


class DeviceTracked(ArrayLike):
    """A value on the device, recorded on a :class:`DeviceTape`. NumPy functions on it launch
    device kernels; see the module docstring for what is supported."""

    __slots__ = ("value", "tape", "node")

    def __init__(self, value: Any, tape: DeviceTape, node: int) -> None:
        self.value = value
        self.tape = tape
        self.node = node

    @property
    def dtype(self) -> np.dtype:
        return self.tape.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def ndim(self) -> int:
        return len(self.value.shape)

    @property
    def size(self) -> int:
        return _size(tuple(self.value.shape))

    def __repr__(self) -> str:
        return f"DeviceTracked(shape={self.shape}, dtype={self.dtype}, on {self.tape.memory.name})"

    def __bool__(self) -> bool:
        raise _unsupported("bool() of a device value (control flow on device values)")

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = ufunc.__name__
        if ufunc is np.matmul and method == "__call__" and not kwargs and len(inputs) == 2:
            return _matmul(self.tape, *inputs)
        if name in _COMPARISONS and method == "__call__" and not kwargs and len(inputs) == 2:
            return _compare(self.tape, ufunc, inputs)
        if method != "__call__" or kwargs or name not in OP_ID:
            what = f"numpy.{name}" + ("" if method == "__call__" else f".{method}")
            raise _unsupported(what + (f" with {', '.join(sorted(kwargs))}=" if kwargs else ""))
        if len(inputs) != _ARITY[name]:
            raise _unsupported(f"numpy.{name} with {len(inputs)} inputs")
        return _elementwise(self.tape, name, inputs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if func in _SHAPE_FUNCTIONS and len(args) == 1 and not kwargs:
            return _SHAPE_FUNCTIONS[func](args[0])
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise _unsupported(_public(func))
        return handler(self.tape, *args, **kwargs)

    def __getitem__(self, key: Any) -> DeviceTracked:
        return _index(self.tape, self, key)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # torch hands any call with a device tape value among its arguments here (torch.sin(x),
        # tensor * x): the torch functions the tape knows are recorded as their NumPy
        # counterparts, any other says that f is torch code the tape cannot run
        name = getattr(func, "__name__", None) or repr(func)
        handler = _TORCH_FUNCTIONS.get(name)
        if handler is None:
            qualname = getattr(func, "__qualname__", None) or name
            module = getattr(func, "__module__", None) or "torch"
            raise _torch_code(f"Tensor.{name}" if "Tensor" in qualname.partition(".")[0] else f"{module}.{name}")
        given = [*args, *(kwargs or {}).values()]
        given += [a for g in given if isinstance(g, (list, tuple)) for a in g]  # torch.cat([x, y])
        tape = next(a.tape for a in given if isinstance(a, DeviceTracked))
        return handler(tape, *args, **(kwargs or {}))

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes DeviceTracked lacks: a Tensor method (x.exp(), x.pow(2))
        # the tape knows is recorded, any other means torch code it cannot run
        handler = _TORCH_FUNCTIONS.get(name)
        if handler is not None and not name.startswith("__"):
            return lambda *args, **kwargs: handler(self.tape, self, *args, **kwargs)
        torch = sys.modules.get("torch")
        if torch is not None and not name.startswith("__") and hasattr(torch.Tensor, name):
            raise _torch_code(f"Tensor.{name}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, *,
            dim: Any = None, keepdim: bool | None = None) -> DeviceTracked:
        """x.sum(), NumPy's keywords or torch's (dim=, keepdim=)."""
        if dtype is not None or out is not None:
            raise _unsupported("sum with " + ("dtype=" if dtype is not None else "out="))
        return _sum(self.tape, self, axis if dim is None else dim, bool(keepdims if keepdim is None else keepdim))

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, *,
             dim: Any = None, keepdim: bool | None = None) -> DeviceTracked:
        """x.mean(), NumPy's keywords or torch's (dim=, keepdim=)."""
        if dtype is not None or out is not None:
            raise _unsupported("mean with " + ("dtype=" if dtype is not None else "out="))
        return _mean(self.tape, self, axis if dim is None else dim, bool(keepdims if keepdim is None else keepdim))


class TorchDeviceTracked(DeviceTracked):
    """A tracked value of torch code: the methods whose meaning differs between NumPy and torch
    take torch's, or are refused (torch's ``std``/``var`` are unbiased, ``max(dim)`` returns
    indices too)."""

    __slots__ = ()

    @property
    def device(self) -> Any:
        """The torch device of the tape's memory (for ``torch.zeros(..., device=x.device)``)."""
        device = getattr(self.tape.memory, "device", None)
        if device is None:
            raise _torch_code("Tensor.device")
        return device

    def transpose(self, dim0: int, dim1: int) -> DeviceTracked:  # type: ignore[override]
        return _np_swapaxes(self.tape, self, dim0, dim1)

    def cumsum(self, dim: int) -> DeviceTracked:  # type: ignore[override]
        return _cumsum(self.tape, self, dim)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> DeviceTracked:  # type: ignore[override]
        return _torch_flatten(self.tape, self, start_dim, end_dim)

    def _torch_only(self, name: str) -> NotImplementedError:
        return _unsupported(f"Tensor.{name}")

    def std(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _torch_var("std")(self.tape, self, *args, **kwargs)

    def var(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _torch_var("var")(self.tape, self, *args, **kwargs)

    def max(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _torch_extreme("max")(self.tape, self, *args, **kwargs)

    def min(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _torch_extreme("min")(self.tape, self, *args, **kwargs)

    def prod(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise self._torch_only("prod")


def _np_sum(tape: DeviceTape, x: Any, axis: Any = None, keepdims: bool = False, **kw: Any) -> DeviceTracked:
    if kw or not isinstance(x, DeviceTracked):
        raise _unsupported("numpy.sum" + (f" with {', '.join(sorted(kw))}=" if kw else " of a constant"))
    return _sum(tape, x, axis, keepdims)


def _np_mean(tape: DeviceTape, x: Any, axis: Any = None, keepdims: bool = False, **kw: Any) -> DeviceTracked:
    if kw or not isinstance(x, DeviceTracked):
        raise _unsupported("numpy.mean" + (f" with {', '.join(sorted(kw))}=" if kw else " of a constant"))
    return _mean(tape, x, axis, keepdims)


def _mean(tape: DeviceTape, x: DeviceTracked, axis: Any, keepdims: bool) -> DeviceTracked:
    count = _size(tuple(x.shape[a] for a in _axes(axis, x.ndim)))
    return _elementwise(tape, "divide", [_sum(tape, x, axis, keepdims), float(count)])


def _np_cumsum(tape: DeviceTape, x: Any, axis: Any = None, **kw: Any) -> DeviceTracked:
    if kw or not isinstance(x, DeviceTracked):
        raise _unsupported("numpy.cumsum" + (f" with {', '.join(sorted(kw))}=" if kw else " of a constant"))
    return _cumsum(tape, x, axis)


def _np_reshape(tape: DeviceTape, x: Any, shape: Any = None, order: str = "C", **kw: Any) -> DeviceTracked:
    if kw or order != "C" or not isinstance(x, DeviceTracked):
        raise _unsupported("numpy.reshape with order= other than 'C'" if order != "C" else "numpy.reshape")
    return _reshape(tape, x, shape)


def _np_ravel(tape: DeviceTape, x: Any, order: str = "C") -> DeviceTracked:
    if order != "C" or not isinstance(x, DeviceTracked):
        raise _unsupported("numpy.ravel with order= other than 'C'")
    return _reshape(tape, x, (x.size,))


def _np_transpose(tape: DeviceTape, x: Any, axes: Any = None) -> DeviceTracked:
    if not isinstance(x, DeviceTracked):
        raise _unsupported("numpy.transpose of a constant")
    return _gather(tape, x, np.transpose(np.arange(x.size, dtype=np.int64).reshape(x.shape), axes))


def _np_swapaxes(tape: DeviceTape, x: Any, axis1: int, axis2: int) -> DeviceTracked:
    if not isinstance(x, DeviceTracked):
        raise _unsupported("numpy.swapaxes of a constant")
    return _gather(tape, x, np.swapaxes(np.arange(x.size, dtype=np.int64).reshape(x.shape), axis1, axis2))


def _np_matmul(tape: DeviceTape, a: Any, b: Any, **kw: Any) -> DeviceTracked:
    if kw:
        raise _unsupported(f"numpy.matmul with {', '.join(sorted(kw))}=")
    return _matmul(tape, a, b)


def _np_dot(tape: DeviceTape, a: Any, b: Any, out: Any = None) -> DeviceTracked:
    if out is not None:
        raise _unsupported("numpy.dot with out=")
    if np.ndim(a) > 2 or np.ndim(b) > 2:  # dot's N-d rule is not matmul's
        raise _unsupported("numpy.dot of arrays of more than 2 dimensions (use matmul)")
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return _elementwise(tape, "multiply", [a, b])
    return _matmul(tape, a, b)


def _refuse_kw(name: str, **given: Any) -> None:
    used = sorted(k for k, v in given.items() if v is not None)
    if used:
        raise _unsupported(f"numpy.{name} with {', '.join(used)}=")


def _np_extreme(reduce: Callable[..., Any], name: str) -> Callable[..., Any]:
    def handler(tape: DeviceTape, a: Any, axis: Any = None, out: Any = None, keepdims: bool = False,
                initial: Any = None, where: Any = True) -> DeviceTracked:
        _refuse_kw(name, out=out, initial=initial, where=None if where is True else where)
        if not isinstance(a, DeviceTracked):
            raise _unsupported(f"numpy.{name} of a constant")
        return _extreme(tape, a, reduce, axis, keepdims)

    return handler


def _np_concatenate(tape: DeviceTape, arrays: Any, axis: Any = 0, out: Any = None, dtype: Any = None,
                    casting: str = "same_kind") -> DeviceTracked:
    _refuse_kw("concatenate", out=out, dtype=dtype)
    arrays = list(arrays)
    if axis is None:
        return _moves_many(tape, arrays, lambda *ids: np.concatenate([i.reshape(-1) for i in ids]))
    return _moves_many(tape, arrays, lambda *ids: np.concatenate(ids, axis=axis))


def _np_stack(tape: DeviceTape, arrays: Any, axis: int = 0, out: Any = None, *, dtype: Any = None,
              casting: str = "same_kind") -> DeviceTracked:
    _refuse_kw("stack", out=out, dtype=dtype)
    return _moves_many(tape, list(arrays), lambda *ids: np.stack(ids, axis=axis))


def _np_where(tape: DeviceTape, condition: Any, x: Any = None, y: Any = None) -> DeviceTracked:
    if x is None or y is None:
        raise _unsupported("numpy.where with one argument")
    if isinstance(condition, DeviceTracked):
        raise _unsupported("numpy.where with a float condition (compare first: x > 0)")
    cond = cuda.host_copy(condition, tape.lib) if hasattr(condition, "__cuda_array_interface__") \
        else np.asarray(condition)
    cond = cond.astype(bool)
    return _moves_many(tape, [x, y], lambda a, b: np.where(cond, a, b))


def _np_moves(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A function of one array that only moves elements (flip, broadcast_to, squeeze, ...): a
    gather of the flat indices it computes on the host at record time."""
    def handler(tape: DeviceTape, a: Any, *args: Any, **kwargs: Any) -> DeviceTracked:
        if not isinstance(a, DeviceTracked):
            raise _unsupported(f"numpy.{fn.__name__} of a constant")
        return _gather(tape, a, np.asarray(fn(np.arange(a.size, dtype=np.int64).reshape(a.shape), *args, **kwargs)))

    return handler


def _tracked(name: str, x: Any) -> DeviceTracked:
    if not isinstance(x, DeviceTracked):
        raise _unsupported(f"numpy.{name} of a constant")
    return x


def _np_var_core(name: str, tape: DeviceTape, a: Any, axis: Any, dtype: Any, out: Any, ddof: float,
                 keepdims: bool, where: Any, mean: Any, correction: Any) -> DeviceTracked:
    _refuse_kw(name, dtype=dtype, out=out, mean=mean, where=None if where is True else where)
    x = _tracked(name, a)
    if correction is not None and correction is not np._NoValue:
        ddof = correction
    axes = _axes(axis, x.ndim)
    scale = var_scale(_size(tuple(x.shape[d] for d in axes)), ddof)
    if not math.isfinite(scale):
        raise _unsupported(f"numpy.{name} with ddof >= the number of elements")
    d = _elementwise(tape, "subtract", [x, _mean(tape, x, axes, True)])
    return _elementwise(tape, "multiply", [_sum(tape, _elementwise(tape, "multiply", [d, d]), axes, keepdims), scale])


def _np_var(tape: DeviceTape, a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
            keepdims: bool = False, *, where: Any = True, mean: Any = None, correction: Any = None) -> DeviceTracked:
    return _np_var_core("var", tape, a, axis, dtype, out, ddof, keepdims, where, mean, correction)


def _np_std(tape: DeviceTape, a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
            keepdims: bool = False, *, where: Any = True, mean: Any = None, correction: Any = None) -> DeviceTracked:
    # a constant slice: sqrt's infinite partial meets the zero of d * d, and the chain rule of
    # op_rules.h gives 0, as the CPU engine's rule says
    return _elementwise(tape, "sqrt", [_np_var_core("std", tape, a, axis, dtype, out, ddof, keepdims, where, mean,
                                                    correction)])


def _np_sort(tape: DeviceTape, a: Any, axis: Any = -1, kind: Any = None, order: Any = None, *,
             stable: Any = None) -> DeviceTracked:
    """sort as a gather of the stable permutation the CPU engine's rule uses, from a host copy
    of the values taken at record time."""
    _refuse_kw("sort", order=order)
    x = _tracked("sort", a)
    host = tape.memory.download(x.value)
    ids = np.arange(x.size, dtype=np.int64).reshape(x.shape)
    if axis is None:
        host, ids, axis = host.reshape(-1), ids.reshape(-1), -1
    perm = np.argsort(host, axis=axis, kind=kind, stable=stable)
    return _gather(tape, x, np.take_along_axis(ids, perm, axis=axis))


def _np_clip(tape: DeviceTape, a: Any, a_min: Any = np._NoValue, a_max: Any = np._NoValue, out: Any = None, *,
             min: Any = np._NoValue, max: Any = np._NoValue, **kw: Any) -> DeviceTracked:
    # the CPU engine's rule: minimum(maximum(x, lo), hi), so at a bound the derivative is 1/2
    _refuse_kw("clip", out=out, **{k: v for k, v in kw.items()})
    lo = a_min if a_min is not np._NoValue else (None if min is np._NoValue else min)
    hi = a_max if a_max is not np._NoValue else (None if max is np._NoValue else max)
    y = a
    if lo is not None:
        y = _elementwise(tape, "maximum", [y, lo])
    if hi is not None:
        y = _elementwise(tape, "minimum", [y, hi])
    return y if isinstance(y, DeviceTracked) else _elementwise(tape, "positive", [y])


def _flat_operand(tape: DeviceTape, x: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(x, DeviceTracked):
        return _reshape(tape, x, shape)
    return np.reshape(np.asarray(x), shape) if isinstance(x, (np.ndarray, int, float)) else x.reshape(shape)


def _np_outer(tape: DeviceTape, a: Any, b: Any, out: Any = None) -> DeviceTracked:
    _refuse_kw("outer", out=out)
    return _elementwise(tape, "multiply", [_flat_operand(tape, a, (-1, 1)), _flat_operand(tape, b, (1, -1))])


def _np_vdot(tape: DeviceTape, a: Any, b: Any) -> DeviceTracked:
    return _matmul(tape, _flat_operand(tape, a, (-1,)), _flat_operand(tape, b, (-1,)))


def _np_inner(tape: DeviceTape, a: Any, b: Any) -> DeviceTracked:
    if np.ndim(a) > 1 or np.ndim(b) > 1:
        raise _unsupported("numpy.inner of arrays of more than 1 dimension")
    return _np_dot(tape, a, b)


def _np_trace(tape: DeviceTape, a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None,
              out: Any = None) -> DeviceTracked:
    _refuse_kw("trace", dtype=dtype, out=out)
    x = _tracked("trace", a)
    diagonal = _gather(tape, x, np.diagonal(np.arange(x.size, dtype=np.int64).reshape(x.shape), offset, axis1, axis2))
    return _sum(tape, diagonal, -1, False)


def _np_diff(tape: DeviceTape, a: Any, n: int = 1, axis: int = -1, prepend: Any = np._NoValue,
             append: Any = np._NoValue) -> DeviceTracked:
    if prepend is not np._NoValue or append is not np._NoValue:
        raise _unsupported("numpy.diff with prepend= or append=")
    x = _tracked("diff", a)
    ax = int(axis) % x.ndim
    for _ in range(int(n)):
        hi, lo = [slice(None)] * x.ndim, [slice(None)] * x.ndim
        hi[ax], lo[ax] = slice(1, None), slice(None, -1)
        x = _elementwise(tape, "subtract", [_index(tape, x, tuple(hi)), _index(tape, x, tuple(lo))])
    return x


def _np_average(tape: DeviceTape, a: Any, axis: Any = None, weights: Any = None, returned: bool = False, *,
                keepdims: bool = False) -> DeviceTracked:
    if weights is not None or returned:
        raise _unsupported("numpy.average with weights= or returned=")
    return _mean(tape, _tracked("average", a), axis, keepdims)


def _np_ptp(tape: DeviceTape, a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> DeviceTracked:
    _refuse_kw("ptp", out=out)
    x = _tracked("ptp", a)
    return _elementwise(tape, "subtract", [_extreme(tape, x, np.max, axis, keepdims), _extreme(tape, x, np.min, axis,
                                                                                                keepdims)])


_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    np.sum: _np_sum, np.mean: _np_mean, np.cumsum: _np_cumsum, np.reshape: _np_reshape,
    np.ravel: _np_ravel, np.matmul: _np_matmul, np.dot: _np_dot, np.transpose: _np_transpose,
    np.swapaxes: _np_swapaxes,
    np.max: _np_extreme(np.max, "max"), np.amax: _np_extreme(np.max, "amax"),
    np.min: _np_extreme(np.min, "min"), np.amin: _np_extreme(np.min, "amin"),
    np.concatenate: _np_concatenate, np.stack: _np_stack, np.where: _np_where,
    np.var: _np_var, np.std: _np_std, np.sort: _np_sort, np.clip: _np_clip, np.outer: _np_outer,
    np.vdot: _np_vdot, np.inner: _np_inner, np.trace: _np_trace, np.diff: _np_diff, np.average: _np_average,
    np.ptp: _np_ptp, np.real: lambda tape, x: x, np.copy: lambda tape, x, **kw: _reshape(tape, _tracked("copy", x),
                                                                                        x.shape),
}
# triu and tril zero the other elements: a where with a host mask, not a gather (a gather of
# their zeros would read element 0)
_FUNCTIONS[np.triu] = lambda tape, m, k=0: _np_where(tape, np.triu(np.ones(np.shape(m)[-2:], bool), k), m, 0.0)
_FUNCTIONS[np.tril] = lambda tape, m, k=0: _np_where(tape, np.tril(np.ones(np.shape(m)[-2:], bool), k), m, 0.0)
# functions of several arrays that only move elements
_FUNCTIONS.update({fn: (lambda fn: lambda tape, arrays, *args, **kwargs: _moves_many(
    tape, list(arrays), lambda *ids: fn(ids, *args, **kwargs)))(fn)
    for fn in (np.hstack, np.vstack, np.dstack, np.column_stack)})
_FUNCTIONS[np.append] = lambda tape, arr, values, axis=None: _moves_many(
    tape, [arr, values], lambda a, b: np.append(a, b, axis=axis))
_FUNCTIONS.update({fn: _np_moves(fn) for fn in (np.squeeze, np.expand_dims, np.broadcast_to, np.flip, np.fliplr,
                                               np.flipud, np.roll, np.take, np.moveaxis, np.tile, np.repeat,
                                               np.diagonal, np.atleast_1d, np.atleast_2d, np.atleast_3d, np.rot90, np.rollaxis, np.take_along_axis, np.resize,
                                               np.matrix_transpose)})


def _torch_elementwise(name: str) -> Callable[..., Any]:
    def handler(tape: DeviceTape, *inputs: Any, **kw: Any) -> DeviceTracked:
        if kw:
            raise _unsupported(f"torch.{name} with {', '.join(sorted(kw))}=")
        if len(inputs) != _ARITY[name]:
            raise _unsupported(f"torch {name} with {len(inputs)} inputs")
        return _elementwise(tape, name, inputs)

    return handler


def _torch_reflected(name: str) -> Callable[..., Any]:
    def handler(tape: DeviceTape, a: Any, b: Any) -> DeviceTracked:  # Tensor.__rsub__(a, b) is b - a
        return _elementwise(tape, name, [b, a])

    return handler


def _torch_reduction(reduce: Callable[..., DeviceTracked], name: str) -> Callable[..., Any]:
    def handler(tape: DeviceTape, x: Any, dim: Any = None, keepdim: bool = False, **kw: Any) -> DeviceTracked:
        if kw or not isinstance(x, DeviceTracked):
            raise _unsupported(f"torch.{name}" + (f" with {', '.join(sorted(kw))}=" if kw else " of a constant"))
        return reduce(tape, x, dim, bool(keepdim))

    return handler


def _torch_shape(*shape: Any) -> Any:
    return tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)) else shape


def _torch_view(tape: DeviceTape, x: Any, *shape: Any) -> DeviceTracked:
    return _np_reshape(tape, x, _torch_shape(*shape))


def _torch_permute(tape: DeviceTape, x: Any, *dims: Any) -> DeviceTracked:
    return _np_transpose(tape, x, _torch_shape(*dims))


def _torch_cumsum(tape: DeviceTape, x: Any, dim: int, **kw: Any) -> DeviceTracked:
    return _np_cumsum(tape, x, dim, **kw)


def _torch_flatten(tape: DeviceTape, x: Any, start_dim: int = 0, end_dim: int = -1) -> DeviceTracked:
    if not isinstance(x, DeviceTracked):
        raise _unsupported("torch.flatten of a constant")
    nd = max(x.ndim, 1)
    start, end = start_dim % nd, end_dim % nd
    shape = (*x.shape[:start], _size(x.shape[start:end + 1]), *x.shape[end + 1:])
    return _reshape(tape, x, shape)


def _torch_var(name: str) -> Callable[..., Any]:
    """torch.var/std: torch's correction (1 by default, ``unbiased=``) as NumPy's ddof."""
    def handler(tape: DeviceTape, x: Any, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
                correction: Any = None) -> DeviceTracked:
        if isinstance(dim, bool):  # torch.var(x, False): the old positional unbiased
            dim, unbiased = None, dim
        ddof = correction if correction is not None else (0 if unbiased is False else 1)
        var = _np_var_core(name, tape, x, dim, None, None, ddof, bool(keepdim), True, None, None)
        return _elementwise(tape, "sqrt", [var]) if name == "std" else var

    return handler


def _torch_extreme(name: str) -> Callable[..., Any]:
    """torch.max/min: of all elements, or of two tensors (maximum/minimum); with a dim torch
    returns indices too, which the tape does not record."""
    reduce, binary = (np.max, "maximum") if name == "max" else (np.min, "minimum")

    def handler(tape: DeviceTape, x: Any, *args: Any, **kwargs: Any) -> Any:
        other = args[0] if args else kwargs.get("other")
        if other is not None and not isinstance(other, (int, np.integer)) and "dim" not in kwargs:
            return _elementwise(tape, binary, [x, other])
        if args or kwargs:
            raise _unsupported(f"torch.{name} with dim= (it returns indices too; use amax/amin)")
        return _extreme(tape, _tracked(name, x), reduce, None, False)

    return handler


def _torch_amax(reduce: Callable[..., Any], name: str) -> Callable[..., Any]:
    def handler(tape: DeviceTape, x: Any, dim: Any = (), keepdim: bool = False) -> DeviceTracked:
        axis = None if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0) else dim
        return _extreme(tape, _tracked(name, x), reduce, axis, bool(keepdim))

    return handler


def _torch_sigmoid(tape: DeviceTape, x: Any) -> DeviceTracked:
    return _elementwise(tape, "reciprocal", [_elementwise(tape, "add", [1.0, _elementwise(
        tape, "exp", [_elementwise(tape, "negative", [x])])])])


def _torch_softplus(tape: DeviceTape, x: Any, beta: float = 1.0, threshold: float = 20.0) -> DeviceTracked:
    # log(1 + exp(beta x)) / beta; torch's switch to x above the threshold differs by under
    # exp(-threshold) relative, below any tolerance
    scaled = _elementwise(tape, "multiply", [x, float(beta)]) if beta != 1 else x
    y = _elementwise(tape, "logaddexp", [scaled, 0.0])
    return _elementwise(tape, "divide", [y, float(beta)]) if beta != 1 else y


def _torch_relu(tape: DeviceTape, x: Any, inplace: bool = False) -> DeviceTracked:
    if inplace:
        raise _unsupported("torch relu with inplace=True")
    return _elementwise(tape, "maximum", [x, 0.0])


def _torch_clamp(tape: DeviceTape, x: Any, min: Any = None, max: Any = None) -> DeviceTracked:
    return _np_clip(tape, x, min, max)


def _torch_cat(tape: DeviceTape, tensors: Any, dim: int = 0, **kw: Any) -> DeviceTracked:
    _refuse_kw("cat", **kw)
    return _np_concatenate(tape, tensors, axis=dim)


def _torch_stack(tape: DeviceTape, tensors: Any, dim: int = 0, **kw: Any) -> DeviceTracked:
    _refuse_kw("stack", **kw)
    return _np_stack(tape, tensors, axis=dim)


def _torch_where(tape: DeviceTape, condition: Any, x: Any = None, y: Any = None) -> DeviceTracked:
    if type(condition).__module__.partition(".")[0] == "torch" and hasattr(condition, "detach"):
        condition = condition.detach().cpu().numpy()
    return _np_where(tape, condition, x, y)


# torch functions and Tensor methods the tape records, by name (torch.sin and Tensor.sin alike),
# each as its NumPy counterpart; any other torch call on a tape value is TorchCodeError
_TORCH_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: _torch_elementwise(name) for name in OP_ID if name not in ("absolute", "true_divide")}
_TORCH_FUNCTIONS.update({alias: _torch_elementwise(name) for alias, name in (
    ("sub", "subtract"), ("mul", "multiply"), ("div", "divide"), ("true_divide", "divide"), ("pow", "power"),
    ("neg", "negative"), ("absolute", "abs"), ("asin", "arcsin"), ("acos", "arccos"), ("atan", "arctan"),
    ("atan2", "arctan2"), ("asinh", "arcsinh"), ("acosh", "arccosh"), ("atanh", "arctanh"))})
_TORCH_FUNCTIONS.update({f"__{dunder}__": _torch_elementwise(name) for dunder, name in (
    ("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "divide"), ("div", "divide"),
    ("pow", "power"), ("neg", "negative"), ("abs", "abs"), ("pos", "positive"))})
_TORCH_FUNCTIONS.update({f"__r{dunder}__": _torch_reflected(name) for dunder, name in (
    ("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "divide"), ("div", "divide"),
    ("pow", "power"))})
_TORCH_FUNCTIONS.update({
    "sum": _torch_reduction(_sum, "sum"), "mean": _torch_reduction(_mean, "mean"),
    "matmul": lambda tape, a, b: _matmul(tape, a, b), "mm": lambda tape, a, b: _matmul(tape, a, b),
    "bmm": lambda tape, a, b: _matmul(tape, a, b), "mv": lambda tape, a, b: _matmul(tape, a, b),
    "dot": lambda tape, a, b: _matmul(tape, a, b), "__matmul__": lambda tape, a, b: _matmul(tape, a, b),
    "__rmatmul__": lambda tape, a, b: _matmul(tape, b, a),
    "reshape": _torch_view, "view": _torch_view, "permute": _torch_permute, "cumsum": _torch_cumsum,
    "flatten": _torch_flatten, "transpose": lambda tape, x, d0, d1: _np_swapaxes(tape, x, d0, d1),
    "t": lambda tape, x: _np_transpose(tape, x),
    "var": _torch_var("var"), "std": _torch_var("std"), "max": _torch_extreme("max"), "min": _torch_extreme("min"),
    "amax": _torch_amax(np.max, "amax"), "amin": _torch_amax(np.min, "amin"), "sigmoid": _torch_sigmoid,
    "softplus": _torch_softplus, "relu": _torch_relu, "clamp": _torch_clamp, "clip": _torch_clamp,
    "cat": _torch_cat, "concat": _torch_cat, "concatenate": _torch_cat, "stack": _torch_stack,
    "where": _torch_where,
})


# -- drivers -----------------------------------------------------------------------------------

def tape_gradient(scalar: Callable[[list[DeviceTracked]], Any], values: Sequence[Any], memory: Memory,
                  dtype: Any, dialect: str = "numpy") -> tuple[list[Any], DeviceTape]:
    """Records ``scalar(leaves)`` with a :class:`DeviceTracked` leaf per device array in
    ``values`` and sweeps; returns the gradients (device arrays of ``memory``) and the tape."""
    tape = DeviceTape(memory, dtype, dialect)
    leaves = [tape.leaf(v) for v in values]
    out = scalar(leaves)
    if not isinstance(out, DeviceTracked):
        raise ValueError(f"f returned {type(out).__name__}, which does not depend on the device leaves "
                         "through the device tape (a conversion to a host value?)")
    grads = tape.backward(out, leaves)
    memory.lib.check(memory.lib.stream_synchronize(memory.stream()), "the device sweep")
    return grads, tape


def memory_for(leaf: Any, library: cuda.DeviceLibrary | None = None) -> Memory:
    """The :class:`Memory` of a device array: CuPy or PyTorch CUDA.

    Raises
    ------
    NotImplementedError
        Another kind of device array (Numba, JAX): its host copy is checked on the CPU instead.
    """
    lib = library or cuda.device_library()
    module = type(leaf).__module__.partition(".")[0]
    if module == "cupy":
        return CupyMemory(lib)
    if module == "torch" and getattr(leaf, "is_cuda", False):
        return TorchMemory(lib, leaf.device)
    from .frameworks import installed

    if hasattr(type(leaf), "__cuda_array_interface__") and installed("cupy"):
        return CupyMemory(lib)  # CuPy adopts any __cuda_array_interface__ array without a copy
    raise _unsupported(f"device arrays of type {type(leaf).__module__}.{type(leaf).__name__}")


def device_gradient(f: Callable[..., Any], *leaves: Any, memory: Memory | None = None) -> tuple[Any, ...]:
    """The gradient of a scalar NumPy-API ``f`` at device arrays ``leaves`` by the device tape, as
    device arrays of the leaves' own type.

    Parameters
    ----------
    f : callable
        ``f(*leaves)`` returns a scalar.
    *leaves
        CuPy arrays or PyTorch CUDA tensors (float32 or float64, one dtype), or host NumPy arrays
        with ``memory`` a :class:`Memory` (the CPU emulation).
    memory : Memory, optional
        Where the tape's buffers live; default from the first leaf (:func:`memory_for`).

    Returns
    -------
    tuple
        One gradient per leaf, on the device.
    """
    if not leaves:
        raise TypeError("device_gradient: expected at least one leaf")
    mem = memory or memory_for(leaves[0])
    values = [mem.adopt(v) for v in leaves]  # read in place: no copy, no trip to the host
    dtypes = {np.dtype(str(v.dtype).removeprefix("torch.")) for v in values}
    if len(dtypes) != 1:
        raise _unsupported(f"leaves of several dtypes ({', '.join(sorted(map(str, dtypes)))})")
    dialect = "torch" if isinstance(mem, TorchMemory) else "numpy"
    grads, _ = tape_gradient(lambda xs: f(*xs), values, mem, dtypes.pop(), dialect)
    return tuple(mem.wrap_result(g) for g in grads)


def compute_with(memory_of: Callable[[Any, int], Memory]) -> Callable[[Any], list[np.ndarray]]:
    """A backend's compute function running the device tape on the memory ``memory_of(problem,
    leaf index)`` names; the gradients come back to the host for the comparison."""

    def compute(problem: Any) -> list[np.ndarray]:
        leaves = problem.diff_leaves
        if not leaves:
            return []
        memory = memory_of(problem, _first_device_leaf(problem))
        dtypes = {np.dtype(x.dtype) for x in leaves}
        if len(dtypes) != 1:
            raise _unsupported(f"differentiated leaves of several dtypes ({', '.join(sorted(map(str, dtypes)))})")
        values = [memory.upload(x) for x in leaves]
        try:
            grads, _ = tape_gradient(problem.scalar_output, values, memory, dtypes.pop(), dialect_of(problem))
        except TorchCodeError as exc:
            raise BackendNotApplicable(str(exc)) from None
        return [memory.download(g).astype(x.dtype, copy=False) for g, x in zip(grads, leaves)]

    return compute


def _first_device_leaf(problem: Any) -> int:
    """The index of the first differentiated device leaf (its memory is the tape's; host leaves
    among the others are uploaded to it), else of the first differentiated leaf."""
    adapters = problem.flat.adapters
    device = [i for i in problem.flat.differentiable if getattr(adapters.get(i), "device", None) is not None]
    return (device or problem.flat.differentiable)[0]


def dialect_of(problem: Any) -> str:
    """``"torch"`` when the first differentiated device leaf is a torch tensor (f is torch code),
    else ``"numpy"``."""
    adapter = problem.flat.adapters.get(_first_device_leaf(problem))
    return "torch" if getattr(adapter, "framework", None) == "torch" else "numpy"


def _device_leaf_memory(problem: Any, index: int) -> Memory:
    # first whether there is a device at all: asked for by name where there is none, the
    # backend says why the device path is unavailable (RuntimeError), before anything else
    lib = cuda.device_library()
    adapter = problem.flat.adapters.get(index)
    device = getattr(adapter, "device", None)
    if adapter is None or device is None:
        raise _unsupported("a host argument (cuda_reverse differentiates CuPy arrays and PyTorch CUDA tensors)")
    if adapter.framework == "cupy":
        return CupyMemory(lib)
    if adapter.framework == "torch":
        return TorchMemory(lib, device)
    # another library's device array (Numba, DLPack): the tape's buffers come from CuPy or torch
    from .frameworks import installed

    if installed("cupy"):
        return CupyMemory(lib)
    if installed("torch") and getattr(__import__("torch").cuda, "is_available", lambda: False)():
        return TorchMemory(lib, "cuda")
    raise _unsupported("a device array of a library other than CuPy and PyTorch without CuPy or PyTorch CUDA "
                       "installed (the device tape allocates through one of them)")


def _applies(problem: Any) -> bool:
    """By default: every differentiated leaf is a device array (a CuPy array or a PyTorch CUDA
    tensor) and the device path is available. On torch code the backend then reports itself not
    applicable (:class:`TorchCodeError`), and the torch backend checks it."""
    adapters = problem.flat.adapters
    leaves = [adapters.get(i) for i in problem.flat.differentiable]
    return bool(leaves) and all(getattr(a, "device", None) is not None for a in leaves) and cuda.available()


register_backend(
    "cuda_reverse",
    compute_with(_device_leaf_memory),
    applies=_applies,
    default=True,
    description="reverse mode on the device: NumPy-API code recorded on a device tape and swept by "
                "gradtest's CUDA kernels; by default on CuPy arrays and PyTorch CUDA tensors where a GPU is "
                "available",
    array_types=("cupy", "torch", "cuda_array"),
)
