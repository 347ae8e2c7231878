"""Runs every benchmark module (benchmarks/bench_*.py), prints one table and saves a plot.

Each module exposes ``run(quick: bool) -> list[dict]``; a row is ``{"benchmark": str, "case": str,
"value": float, "unit": str, "target": str}``. A target such as ``"< 2"`` or ``">= 10"`` is in the
row's unit and is checked here; any other text is shown as is. The table also goes to
``benchmarks/results/results.json`` and, when matplotlib is installed, a bar chart per benchmark
to ``benchmarks/results/benchmarks.png``.

Usage: ``python benchmarks/run.py [--quick] [--only NAME ...]``. It needs an importable gradtest:
installed (``pip install ".[bench]"``, which also brings the optional contenders), or the source
tree next to this folder with its extensions built in place; a copy of this folder elsewhere
works against an installed gradtest. The exit status is 1 when a
module failed to import or run, 0 otherwise (a missed target is reported, not an error: timings
depend on the machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import import_gradtest  # noqa: E402

RESULTS = HERE / "results"
ROW_KEYS = ("benchmark", "case", "value", "unit", "target")
_TARGET_RE = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def discover() -> dict[str, Path]:
    """Benchmark modules by short name (``bench_fd.py`` -> ``fd``), sorted."""
    return {path.stem.removeprefix("bench_"): path for path in sorted(HERE.glob("bench_*.py"))}


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def validate(rows: Any, name: str) -> list[dict]:
    """Checks a module's rows against the row format; raises ValueError naming the problem."""
    if not isinstance(rows, list):
        raise ValueError(f"bench_{name}.run returned {type(rows).__name__}, expected a list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != set(ROW_KEYS):
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"bench_{name}.run row {i}: expected keys {list(ROW_KEYS)}, got {keys}")
        if not isinstance(row["value"], (int, float)):
            raise ValueError(f"bench_{name}.run row {i}: value must be a number, got {row['value']!r}")
    return rows


def target_met(row: dict) -> str:
    """'yes'/'no' for a numeric target like '< 2', '' when the target is text or absent."""
    match = _TARGET_RE.match(str(row["target"]))
    value = float(row["value"])
    if not match or math.isnan(value):
        return ""
    op, bound = match.group(1), float(match.group(2))
    ok = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[op]
    return "yes" if ok else "NO"


def format_table(rows: list[dict]) -> str:
    header = ["benchmark", "case", "value", "unit", "target", "met"]
    body = [
        [r["benchmark"], r["case"], f"{float(r['value']):.4g}", r["unit"], str(r["target"]), target_met(r)]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    right = {2}  # numbers right-aligned
    lines = []
    for j, line in enumerate([header] + body):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> str:
    """Saves one horizontal bar chart per benchmark and unit; returns a line saying what happened."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; no plot (pip install matplotlib, or .[bench])"
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if math.isfinite(float(row["value"])):
            groups.setdefault((row["benchmark"], row["unit"]), []).append(row)
    if not groups:
        return "nothing to plot"
    heights = [max(2.0, 0.28 * len(g) + 1.0) for g in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, ((name, unit), group) in zip(axes[:, 0], groups.items()):
        labels = [r["case"] for r in group]
        values = [float(r["value"]) for r in group]
        colors = ["#cf222e" if target_met(r) == "NO" else "#1f6feb" for r in group]
        ax.barh(range(len(group)), values, color=colors)
        ax.set_yticks(range(len(group)), labels, fontsize=7)
        ax.invert_yaxis()
        if min(values) > 0 and max(values) / min(values) > 100:
            ax.set_xscale("log")
        ax.set_title(f"bench_{name}, {unit} (red: target missed)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot saved to {path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run gradtest's benchmarks.")
    parser.add_argument("--quick", action="store_true", help="short runs (fewer sizes, repeats)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (e.g. fd or bench_fd); may repeat")
    options = parser.parse_args(argv)
    # the installed gradtest, else the source tree next to this folder; from a copy of the folder
    # without an installed gradtest this exits saying what is needed, before any module runs
    import_gradtest()

    modules = discover()
    if options.only:
        wanted = [name.removeprefix("bench_").removesuffix(".py") for name in options.only]
        unknown = [name for name in wanted if name not in modules]
        if unknown:
            parser.error(f"--only: no benchmark named {', '.join(unknown)}; "
                         f"available: {', '.join(modules) or 'none'}")
        modules = {name: modules[name] for name in wanted}

    rows: list[dict] = []
    failed: list[str] = []
    for name, path in modules.items():
        start = time.perf_counter()
        print(f"running bench_{name} ...", file=sys.stderr, flush=True)
        try:
            rows += validate(load(name, path).run(options.quick), name)
        except Exception:  # one broken module must not hide the others' numbers
            failed.append(name)
            print(f"bench_{name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        print(f"  done in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    if rows:
        print(format_table(rows))
    missed = sum(target_met(r) == "NO" for r in rows)
    print(f"\n{len(rows)} measurements; {missed} missed their target; "
          f"{len(failed)} module(s) failed{': ' + ', '.join(failed) if failed else ''}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(),
            "quick": options.quick, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (RESULTS / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(plot(rows, RESULTS / "benchmarks.png"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
