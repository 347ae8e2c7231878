"""The device path's speed, GPU only: the three ratios of issue 11 (part 7), side by side in one run.

(1) The device reverse gradient (gradtest.cuda_reverse, through the public device_gradient) of a
    20-op elementwise chain on 10^7 float64 elements, against CuPy's forward pass of the same
    NumPy code alone. Target: within 3x (forward plus backward memory traffic).
(2) The same gradient against PyTorch CUDA autograd on the same chain written with torch ops.
    Target: within 1.5x. Also the device tape recording that torch code itself (on a torch CUDA
    tensor, through ``__torch_function__``) against the same autograd.
(3) Batched finite differences of a device kernel (examples/kernels/rosenbrock_cuda.cu) at
    n = 10^5 through gradtest.cuda.CudaKernel, against the same evaluations done one launch each:
    the one-launch cost is measured on a sample of evaluations (build the point, launch f for
    one point, read f back) and multiplied by the number of evaluations the batched run made.
    Target: >= 20x.

Each time is the median of a few runs after a warm-up, the device synchronized around each.
Where there is no GPU the script says why and exits 0. Run: ``python benchmarks/bench_cuda.py
[--quick]`` (10^6 elements and n = 10^4), or through tests/gpu/run.sh.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
try:
    import gradtest
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, str(HERE.parent / "python"))
    import gradtest

from gradtest import cuda, cuda_reverse


def chain(xp: Any, x: Any) -> Any:
    """20 elementwise ops and a sum; xp is numpy (CuPy arrays, the device tape) or torch."""
    y = xp.sin(x)
    y = y * 0.5
    y = y + 1.5
    y = xp.log(y)
    z = xp.cos(y)
    y = y * z
    y = xp.tanh(y)
    z = y * y
    z = -z
    z = xp.exp(z)
    y = y - z
    z = y * y
    z = z + 1.0
    z = xp.sqrt(z)
    y = y / z
    z = xp.abs(y)
    z = z + 1.0
    y = y * z
    y = xp.square(y)
    y = y + x
    return xp.sum(y)


def timed(fn: Callable[[], Any], sync: Callable[[], None], repeat: int = 5) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ratio_chain(n: int, rows: list[dict[str, Any]]) -> None:
    """Appends the chain's ratios to rows as each is measured (a later failure keeps them)."""
    import cupy

    sync = cupy.cuda.Device().synchronize
    x = cupy.asarray(np.random.default_rng(0).uniform(-1.0, 1.0, n))
    t_fwd = timed(lambda: chain(np, x), sync)
    t_rev = timed(lambda: cuda_reverse.device_gradient(lambda v: chain(np, v), x), sync)
    print(f"bench_cuda: device reverse {t_rev * 1e3:.1f} ms, CuPy forward {t_fwd * 1e3:.1f} ms (n={n})")
    rows.append(row(f"device reverse gradient / CuPy forward (20-op chain, n={n:.0e})", t_rev / t_fwd, "<= 3"))
    try:
        import torch
    except ImportError:
        print("bench_cuda: torch is not installed: no torch ratio")
        return
    xt = torch.as_tensor(cupy.asnumpy(x), device="cuda").requires_grad_(True)

    def torch_grad() -> Any:
        return torch.autograd.grad(chain(torch, xt), xt)[0]

    t_torch = timed(torch_grad, torch.cuda.synchronize)
    # both gradients agree (a ratio of wrong answers would mean nothing)
    (g,) = cuda_reverse.device_gradient(lambda v: chain(np, v), x)
    np.testing.assert_allclose(cupy.asnumpy(g), torch_grad().cpu().numpy(), rtol=1e-10, atol=1e-12)
    print(f"bench_cuda: device reverse {t_rev * 1e3:.1f} ms, torch autograd {t_torch * 1e3:.1f} ms (n={n})")
    rows.append(row(f"device reverse gradient / torch CUDA autograd (n={n:.0e})", t_rev / t_torch, "<= 1.5"))
    # the same chain as torch code on a torch CUDA tensor, recorded through __torch_function__
    xd = xt.detach()
    t_rev_torch = timed(lambda: cuda_reverse.device_gradient(lambda v: chain(torch, v), xd), torch.cuda.synchronize)
    (gt,) = cuda_reverse.device_gradient(lambda v: chain(torch, v), xd)
    np.testing.assert_allclose(gt.cpu().numpy(), torch_grad().cpu().numpy(), rtol=1e-10, atol=1e-12)
    print(f"bench_cuda: device reverse of the torch code {t_rev_torch * 1e3:.1f} ms (n={n})")
    rows.append(row(f"device reverse of torch code / torch CUDA autograd (n={n:.0e})", t_rev_torch / t_torch,
                    "<= 1.5"))


def row(case: str, value: float, target: str) -> dict[str, Any]:
    return {"benchmark": "cuda", "case": case, "value": float(value), "unit": "x", "target": target}


def ratio_fd(n: int, rows: list[dict[str, Any]], sample: int = 2000) -> None:
    """Appends the batched-FD ratio to rows."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("bench_cuda: nvcc is not installed: no batched-FD ratio")
        return
    build = Path(tempfile.mkdtemp())
    lib_path = build / "librosen_cuda.so"
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-O2", f"-I{gradtest.ckernel.get_include()}",
                    "-gencode", "arch=compute_90,code=sm_90", "-gencode", "arch=compute_80,code=sm_80",
                    str(HERE.parent / "examples" / "kernels" / "rosenbrock_cuda.cu"), "-o", str(lib_path)],
                   check=True)
    x = np.random.default_rng(1).uniform(-1.0, 1.5, n)
    k = cuda.CudaKernel(f"{lib_path}:rosen_batch", name="rosen_batch")
    start = time.perf_counter()
    res = k.finite_differences(x)
    t_batched = time.perf_counter() - start

    # one launch per evaluation, on the same device path: build the point, launch, read f back
    lib = cuda.device_library()
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                          ctypes.c_void_p, ctypes.c_void_p)(
        ctypes.cast(getattr(ctypes.CDLL(str(lib_path)), "rosen_batch"), ctypes.c_void_p).value)
    bufs = [ctypes.c_void_p() for _ in range(5)]
    sizes = [x.nbytes, x.nbytes, 8, 8, 8]
    for b, s in zip(bufs, sizes):
        lib.check(lib.malloc(s, ctypes.byref(b)), "cudaMalloc")
    x0, pts, comp, val, fout = bufs
    lib.check(lib.memcpy_sync(None, x0, x.ctypes.data, x.nbytes, 1), "copy")
    host_c, host_v, host_f = np.zeros(1, np.int64), np.zeros(1), np.zeros(1)
    start = time.perf_counter()
    for j in range(sample):
        host_c[0], host_v[0] = j % n, x[j % n] + 1e-3
        lib.check(lib.memcpy_sync(None, comp, host_c.ctypes.data, 8, 1), "copy")
        lib.check(lib.memcpy_sync(None, val, host_v.ctypes.data, 8, 1), "copy")
        lib.check(lib.fd_points(None, 0, 1, n, x0, comp, val, pts), "gtd_fd_points")
        lib.check(fn(None, None, 1, n, pts, fout), "rosen_batch")
        lib.check(lib.memcpy_sync(None, host_f.ctypes.data, fout, 8, 0), "copy")
    per_eval = (time.perf_counter() - start) / sample
    for b in bufs:
        lib.free(b)
    t_single = per_eval * res["evaluations"]
    print(f"bench_cuda: batched FD at n={n}: {res['evaluations']} evaluations in {res['launches']} launches "
          f"({res['rounds']} rounds), {t_batched:.2f} s; one launch each: {per_eval * 1e6:.1f} us x "
          f"{res['evaluations']} = {t_single:.1f} s (the per-evaluation cost measured on {sample})")
    rows.append(row(f"batched FD / one launch each (n={n:.0e})", t_single / t_batched, ">= 20"))


def run(quick: bool, failures: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows; none (and a line saying why) where there is no GPU.

    Each part runs even when the one before it failed (the GPU run gets one try, so one failure
    must not hide the other ratios). With ``failures`` given, each failure is printed with its
    traceback and appended there; without it, the first one is raised after every part ran.
    """
    if not cuda.available():
        print(f"bench_cuda: skipped: {cuda.unavailable_reason()}")
        return []
    rows: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    for name, part in (("the 20-op chain", lambda: ratio_chain(10**6 if quick else 10**7, rows)),
                       ("batched finite differences", lambda: ratio_fd(10**4 if quick else 10**5, rows))):
        try:
            part()
        except Exception as exc:
            traceback.print_exc()
            print(f"bench_cuda: FAILED: {name}: {type(exc).__name__}: {exc}".splitlines()[0][:300])
            errors.append(exc)
            if failures is not None:
                failures.append(f"{name}: {type(exc).__name__}")
    if errors and failures is None:
        raise errors[0]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^6 elements and n = 10^4")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    failures: list[str] = []
    rows = run(args.quick, failures)
    for r in rows:
        print(f"{r['case']:<66} {r['value']:8.2f}{r['unit']}  target {r['target']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if failures:
        print(f"bench_cuda: {len(failures)} part(s) failed: {'; '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
