"""Benchmark of the dispatch analysis (the opt check).

Times check_dispatch on a kernel of the C test library (built here with the system compiler) and
on large real library functions: OpenBLAS's cblas_dgemm from the scipy-openblas32 wheel and, when
Python is built as a shared library, libpython's PyNumber_Add, with the size of the call graph
each one explores. The first check reads the library's tables (ELF parsing, capstone loading) and
decodes every reachable function; a repeated check reuses the tables and the per-function
summaries (each function is decoded once per list of target modules): the target is under 20 ms
per repeated check.

Run alone: ``python benchmarks/bench_dispatch.py [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "dispatch_fixtures" / "kernels.c"
TARGET_MS = 20.0


def _build_kernels(out_dir: str) -> str | None:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        cc = "gcc" if shutil.which("gcc") else None
    if cc is None:
        return None
    out = os.path.join(out_dir, "libgtk_bench.so")
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", out, str(FIXTURE), "-lm"], check=False, capture_output=True)
    return out if proc.returncode == 0 else None


def _targets(tmp: str) -> list[tuple[str, str]]:
    targets = []
    lib = _build_kernels(tmp)
    if lib:
        targets.append(("test library gt_softplus_sum", f"{lib}:gt_softplus_sum"))
    try:
        import scipy_openblas32

        lib_dir = scipy_openblas32.get_lib_dir()
        so = next((f for f in sorted(os.listdir(lib_dir)) if f.endswith(".so")), None)
        if so:
            targets.append(("OpenBLAS scipy_cblas_dgemm", f"{os.path.join(lib_dir, so)}:scipy_cblas_dgemm"))
    except ImportError:
        pass
    soname = sysconfig.get_config_var("INSTSONAME")
    libdir = sysconfig.get_config_var("LIBDIR")
    if soname and libdir and soname.endswith(tuple(f".so{v}" for v in ("", ".1.0"))) and \
            os.path.exists(os.path.join(libdir, soname)):
        targets.append(("libpython PyNumber_Add", f"{os.path.join(libdir, soname)}:PyNumber_Add"))
    return targets


def run(quick: bool) -> list[dict]:
    """Measures each target; returns benchmark rows."""
    sys.path.insert(0, str(ROOT / "python"))
    from gradtest import check_dispatch

    repeats = 3 if quick else 15
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, target in _targets(tmp):
            t0 = time.perf_counter()
            report = check_dispatch(target)
            cold = time.perf_counter() - t0
            n = max(1, repeats if "libpython" not in case else repeats // 3)
            warm, analysis = [], []
            for _ in range(n):
                t0 = time.perf_counter()
                r = check_dispatch(target)
                warm.append(time.perf_counter() - t0)
                analysis.append(r.seconds)
            warm_ms = 1e3 * statistics.median(warm)
            analysis_ms = 1e3 * statistics.median(analysis)
            decode_s = report.seconds  # the first analysis decoded every function
            rows += [
                {"benchmark": "dispatch", "case": f"{case}: first check (read tables, decode)", "value": 1e3 * cold,
                 "unit": "ms", "target": ""},
                {"benchmark": "dispatch", "case": f"{case}: first analysis in the core", "value": 1e3 * decode_s,
                 "unit": "ms", "target": ""},
                {"benchmark": "dispatch", "case": f"{case}: repeated check (tables and summaries cached)",
                 "value": warm_ms, "unit": "ms", "target": f"< {TARGET_MS:g}"},
                {"benchmark": "dispatch", "case": f"{case}: repeated check / target", "value": warm_ms / TARGET_MS,
                 "unit": "ratio", "target": "< 1"},
                {"benchmark": "dispatch", "case": f"{case}: repeated analysis in the core", "value": analysis_ms,
                 "unit": "ms", "target": ""},
                {"benchmark": "dispatch", "case": f"{case}: call graph", "value": float(len(report.functions)),
                 "unit": "functions", "target": ""},
                {"benchmark": "dispatch", "case": f"{case}: instructions decoded", "value": float(report.instructions),
                 "unit": "instructions", "target": ""},
                {"benchmark": "dispatch", "case": f"{case}: decoding time per instruction",
                 "value": 1e6 * decode_s / max(1, report.instructions), "unit": "us", "target": ""},
                {"benchmark": "dispatch", "case": f"{case}: findings", "value": float(len(report.findings)),
                 "unit": "findings", "target": ""},
            ]
    return rows


def main() -> None:
    rows = run(quick="--quick" in sys.argv)
    width = max(len(r["case"]) for r in rows)
    for r in rows:
        print(f"{r['case']:<{width}}  {r['value']:>12.3f} {r['unit']:<13} {r['target']}")


if __name__ == "__main__":
    main()
