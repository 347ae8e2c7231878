"""Helpers the benchmark modules share: finding gradtest, interleaved timing, optional contenders,
and peak memory measured in a child process.

Nothing here is a benchmark (``run.py`` only collects ``bench_*.py``).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE_PACKAGE = HERE.parent / "python"
NEEDS = ("gradtest is not importable. Install it (pip install \".[bench]\" in the repository), or run "
         "from a source checkout after `python setup.py build_ext --inplace`.")


def import_gradtest() -> Any:
    """Imports gradtest: the installed one, else the source tree next to this folder (a checkout
    with in-place extensions). Exits with a message saying what is needed when neither works, as
    when the benchmarks folder was copied elsewhere without gradtest installed."""
    try:
        importlib.import_module("gradtest._reverse")  # the package, with its extensions built
        return importlib.import_module("gradtest")
    except ImportError:
        pass
    if (SOURCE_PACKAGE / "gradtest").is_dir() and str(SOURCE_PACKAGE) not in sys.path:
        sys.path.insert(0, str(SOURCE_PACKAGE))
        for name in [m for m in sys.modules if m == "gradtest" or m.startswith("gradtest.")]:
            del sys.modules[name]
    try:
        importlib.import_module("gradtest._reverse")
        return importlib.import_module("gradtest")
    except ImportError as exc:
        raise SystemExit(f"{NEEDS} ({exc})") from None


def optional(name: str) -> Any:
    """The module ``name``, or None when it is not installed (the caller prints a skip row)."""
    try:
        return __import__(name)
    except ImportError:
        return None


def best_interleaved(fns: dict[str, Callable[[], Any]], min_time: float, rounds: int = 7) -> dict[str, float]:
    """Best seconds per call of each fn, measured in alternating rounds so that a load spike on a
    shared machine hits all of them alike (their ratios are what the rows report)."""
    numbers = {}
    for name, fn in fns.items():
        fn()
        number = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            if time.perf_counter() - t0 >= min_time / rounds or number > 1 << 20:
                break
            number *= 2
        numbers[name] = number
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / numbers[name])
    return best


def median_per_call(fn: Callable[[], Any], calls: int) -> float:
    """Median seconds of single calls of fn (after one warm-up call): the figure a user sees from
    back-to-back calls, where a minimum would hide intermittent stalls such as thread contention."""
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_bytes_of(fn: Callable[[], Any]) -> float:
    """Bytes by which the process's peak resident set grows over one call of fn, from the current
    resident set: every allocator counts (NumPy's, the C core's, torch's, XLA's). Call it once per
    fresh process, before fn has ever run (memory a previous call freed stays resident, so a
    second call's growth would be hidden). Linux only: the peak is reset through
    /proc/self/clear_refs first."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current VmRSS
    before = _rss_kib("VmRSS")
    result = fn()
    peak = _rss_kib("VmHWM")
    del result
    return float(peak - before) * 1024.0


def run_child(module: Path, args: Sequence[str], env: dict[str, str] | None = None,
              timeout: float = 600.0) -> dict[str, Any]:
    """Runs ``python module --child ARGS`` and returns the JSON object it prints last; the child
    finds gradtest the same way as this process."""
    child_env = dict(os.environ)
    path = [p for p in sys.path if p and Path(p, "gradtest").is_dir()]
    if path:
        child_env["PYTHONPATH"] = os.pathsep.join(path + [child_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    out = subprocess.run([sys.executable, str(module), "--child", *args], env=child_env, capture_output=True,
                         text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {module.name} {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(bench: str, case: str, value: float, unit: str, target: str = "") -> dict[str, Any]:
    return {"benchmark": bench, "case": case, "value": float(value), "unit": unit, "target": target}


def load_line() -> str:
    """The 1-minute load average and CPU count, for the report."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return f"cpus={os.cpu_count()}"
    return f"load {load:.2f} on {os.cpu_count()} cpus"


def chain(x: Any, np_: Any = np) -> Any:
    """The benchmarks' 20-op elementwise chain: 4 rounds of sin, *, tanh, +, exp (``np_`` is numpy
    or a clone: autograd.numpy, torch, jax.numpy)."""
    for _ in range(4):
        x = np_.sin(x)
        x = x * 1.1
        x = np_.tanh(x)
        x = x + 0.3
        x = np_.exp(x)
    return x
