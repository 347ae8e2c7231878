"""``python -m gradtest check lib.so:f --gradient f_grad``: check a C kernel from the shell.

Exit status: 0 when every derivative passed, 1 when a check failed (a wrong derivative, a kernel
that returned an error status or crashed), 2 on bad usage (unknown symbol, unloadable library,
bad options or input file). Meant for ``make test`` in C projects that write no Python.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from ._names import unknown_backend
from .ckernel import CKernel, KernelError, KernelLoadError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="LIB:SYMBOL",
                        help="the kernel's function, e.g. ./libk.so:f (gradtest.h signature)")
    parser.add_argument("--gradient", metavar="SYMBOL",
                        help="its gradient (a scalar function); a bare name is looked up in LIB")
    parser.add_argument("--vjp", metavar="SYMBOL", help="its vector-Jacobian product")
    parser.add_argument("--jvp", metavar="SYMBOL", help="its Jacobian-vector product")
    parser.add_argument("--n-out", metavar="M",
                        help="outputs of a vector function: an integer, or 'n' for as many as inputs "
                             "(default: a scalar function)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--n", type=int, metavar="N",
                       help="check at a random point of N standard-normal inputs (default 10)")
    where.add_argument("--x", metavar="FILE.npy", help="check at the point stored in FILE.npy")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="the kernel's element type (default float64)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random point and cotangent (default 0)")
    parser.add_argument("--method", choices=("central", "forward", "backward"), default="central")
    parser.add_argument("--no-richardson", action="store_true",
                        help="one step instead of Richardson extrapolation (half the evaluations)")
    parser.add_argument("--rel-step", type=float, default=0.0, metavar="H",
                        help="finite-difference step base (default: chosen from the dtype)")
    parser.add_argument("--atol", type=float, help="absolute tolerance (default: from the error estimates)")
    parser.add_argument("--rtol", type=float, help="relative tolerance")
    parser.add_argument("--broken", action="append", default=[], metavar="BACKEND",
                        help="a backend (user, user_vjp, user_jvp) expected to fail; repeatable")
    parser.add_argument("--no-isolate", action="store_true",
                        help="run the kernel in this process (faster; a crash ends the command)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="kill a stage of the kernel that runs longer (isolated runs only; default: "
                             "derived from the cost of one evaluation, see the docs' C-kernel page)")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="split finite differences over T threads (the kernel must be thread safe)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _usage(message: str) -> int:
    print(f"gradtest check: error: {message}", file=sys.stderr)
    return 2


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def report_to_json(report: Any) -> dict[str, Any]:
    """A JSON-ready summary of a GradientReport."""
    outcomes = {}
    for name, o in report.outcomes.items():
        worst = None
        if o.worst is not None:
            worst = {"element": o.worst.name, "expected": _finite(o.worst.expected),
                     "got": _finite(o.worst.got), "tolerance": _finite(o.worst.tolerance)}
        entry: dict[str, Any] = {
            "status": o.status, "max_abs_err": _finite(o.max_abs_err), "max_rel_err": _finite(o.max_rel_err),
            "worst": worst, "message": o.message,
        }
        exc = o.exception
        if exc is not None:
            entry["exception"] = {"type": type(exc).__name__, "message": str(exc)}
            for attr in ("stage", "status", "signal", "signal_name", "exit_code"):
                if hasattr(exc, attr):
                    entry["exception"][attr] = getattr(exc, attr)
        outcomes[name] = entry
    return {
        "function": report.function_name, "passed": report.passed, "mode": report.mode,
        "method": report.method, "n_elements": report.n_elements, "evaluations": report.evaluations,
        "seconds": report.seconds, "notes": list(report.notes), "outcomes": outcomes,
    }


def _require_npy(path: str) -> None:
    """A ValueError saying so when ``path`` is not a .npy file (checked by its magic bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise ValueError(f"--x: cannot read {path!r}: {exc.strerror or exc}") from None
    if head == b"\x93NUMPY":
        return
    what = "a .npz archive (several arrays)" if head[:2] == b"PK" else "not a .npy file"
    raise ValueError(f"--x: {path!r} is {what}; expected one array saved with numpy.save(path, x)")


def _point(args: argparse.Namespace, dtype: np.dtype) -> np.ndarray:
    if args.x is not None:
        _require_npy(args.x)
        try:
            x = np.load(args.x, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--x: cannot read {args.x!r} as a .npy array: {exc}") from None
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            raise ValueError(f"--x: expected a floating array in {args.x!r}, got {getattr(x, 'dtype', type(x))}")
        if x.dtype != dtype:
            raise ValueError(f"--x: the array in {args.x!r} is {x.dtype}; the kernel is {dtype} (--dtype)")
        return x
    n = 10 if args.n is None else args.n
    if n < 1:
        raise ValueError(f"--n: expected an integer >= 1, got {n}")
    return np.random.default_rng(args.seed).standard_normal(n).astype(dtype)


def _n_out(text: str | None) -> Any:
    if text is None:
        return None
    if text == "n":
        return lambda n: n
    try:
        m = int(text)
    except ValueError:
        raise ValueError(f"--n-out: expected an integer or 'n', got {text!r}") from None
    if m < 1:
        raise ValueError(f"--n-out: expected an integer >= 1, got {m}")
    return m


def run(args: argparse.Namespace) -> int:
    from ._finite_diff import GroundTruthError
    from .api import check_gradients

    if ":" not in args.function:
        return _usage(f"expected LIB:SYMBOL, got {args.function!r}")
    if args.timeout is not None and args.no_isolate:
        return _usage("--timeout needs an isolated run (drop --no-isolate)")
    try:
        dtype = np.dtype(args.dtype)
        x = _point(args, dtype)
        kernel = CKernel(args.function, gradient=args.gradient, vjp=args.vjp, jvp=args.jvp,
                         dtype=dtype, n_out=_n_out(args.n_out),
                         thread_safe=args.threads is not None and args.threads > 1)
    except (KernelLoadError, ValueError, TypeError) as exc:
        return _usage(str(exc))
    if not kernel.__gradtest_backends__:
        return _usage("nothing to check: give --gradient, --vjp or --jvp")
    unknown = [name for name in args.broken if name not in kernel.__gradtest_backends__]
    if unknown:
        message = unknown_backend(unknown[0], kernel.__gradtest_backends__, "this kernel's backends")
        return _usage(f"--broken: {message}")
    options: dict[str, Any] = dict(method=args.method, richardson=not args.no_richardson,
                                   rel_step=args.rel_step, seed=args.seed, isolate=not args.no_isolate)
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.threads is not None:
        options["threads"] = args.threads
    try:
        report = check_gradients(kernel, x, atol=args.atol, rtol=args.rtol,
                                 broken_backends=args.broken, **options)
    except (KernelError, GroundTruthError) as exc:  # f itself failed: no ground truth
        if args.json:
            print(json.dumps({"function": kernel.name, "passed": False,
                              "error": {"type": type(exc).__name__, "message": str(exc),
                                        "stage": getattr(exc, "stage", "function")}}, indent=2))
        else:
            print(f"gradtest check: {kernel.name}: FAILED: {exc}")
        return 1
    except (ValueError, TypeError) as exc:
        return _usage(str(exc))
    if args.json:
        print(json.dumps(report_to_json(report), indent=2))
    else:
        print(report)
    return 0 if report.passed else 1
