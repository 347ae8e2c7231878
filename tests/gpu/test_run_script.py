"""tests/gpu/run.sh in its dry mode (GRADTEST_GPU_DRY=1): no GPU needed, so CI runs it.

The GPU run of the project gets one try on a machine with a short device budget; these tests
check, without a GPU, that the script's control flow holds there: every part runs, a part that
fails does not stop the others, the summary comes last and is short, and the RESULT line says
what happened. To stay quick they skip the builds (GRADTEST_GPU_BUILD=0: the extensions this
checkout was built with are used) and run two emulation tests; .ci/run runs the whole dry mode,
builds included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "gpu" / "run.sh"

pytestmark = [
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                       reason="needs bash and timeout (coreutils)"),
    # run.sh runs tests/gpu/test_gpu.py only, but a run of the whole folder from inside it
    # must not start the script again
    pytest.mark.skipif(os.environ.get("GRADTEST_GPU_RUN") == "1", reason="inside tests/gpu/run.sh"),
]


def _tree(tmp_path: Path) -> Path:
    """A copy of the checkout with its built extensions and without the wheels folder (whose
    wheels are for the GPU machine's Python, not necessarily this one)."""
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("wheels", "__pycache__", "build", "*.egg-info", ".git")
    for name in ("python", "tests", "benchmarks", "examples", "csrc"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, tree / name)
    return tree


def _run(tree: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    wheels = tmp_path / "no_wheels"
    wheels.mkdir(exist_ok=True)
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT", "GRADTEST_GPU_RUN")}
    full.update(PYTHON=sys.executable, OUT=str(tmp_path / "logs"), GRADTEST_GPU_DRY="1", GRADTEST_GPU_BUILD="0",
                GRADTEST_GPU_WHEELS=str(wheels),
                GRADTEST_GPU_EMULATION="tests/test_cuda_emulation.py::test_emulation_is_never_reported_as_gpu_support "
                                       "tests/test_cuda_emulation.py::test_unbroadcast_to_a_scalar_and_float32", **env)
    return subprocess.run(["bash", str(tree / "tests" / "gpu" / "run.sh")], cwd=tree, env=full,
                          capture_output=True, text=True, timeout=600)


def _summary(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("== SUMMARY"))
    return lines[start:]


@pytest.fixture(scope="module")
def built() -> None:
    import sysconfig

    core = ROOT / "python" / "gradtest" / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not core.exists():  # an installed gradtest (CI): .ci/run runs the dry mode with its builds
        pytest.skip(f"the C extensions are not built in place in this checkout ({core.name})")


def test_the_dry_run_passes_with_the_gpu_parts_marked_skipped(built: None, tmp_path: Path) -> None:
    res = _run(_tree(tmp_path), tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    summary = _summary(res.stdout)
    text = "\n".join(summary)
    assert summary[-1] == "RESULT: ok (dry run: no GPU part ran)", text
    rows = {line.split()[0]: line for line in summary[1:] if line[:1].isalpha() and " s" in line}
    for name in ("machine", "wheels", "probe", "emulation-tests"):
        assert " ok " in rows[name], text
    assert "skipped: no GPU" in rows["gpu-tests"] and "skipped: no GPU" in rows["bench"], text
    assert "skipped: prebuilt" in rows["build"], text
    assert "emulation-tests:" in text and " passed" in text and "failed" not in text, text
    # the probe says why the device path is unavailable (CUDA_VISIBLE_DEVICES is empty)
    assert "gradtest.cuda.available(): False - " in text, text
    # compact: the summary fits many times over in the 12,000 characters the device tool returns
    assert len(text) < 3000, text
    logs = tmp_path / "logs"
    assert {p.name for p in logs.glob("*.log")} >= {"machine.log", "wheels.log", "probe.log", "gpu-tests.log",
                                                   "emulation-tests.log", "bench.log"}


def test_a_failing_part_does_not_stop_the_others_and_the_summary_still_prints(built: None,
                                                                                tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    # the probe's import of gradtest.cuda breaks: that part fails, the later parts still run
    # and report their own failures, and the summary and RESULT line still come last
    (tree / "python" / "gradtest" / "cuda.py").write_text("raise ImportError('planted by the test')\n")
    res = _run(tree, tmp_path, GRADTEST_GPU_BUDGET="200")
    assert res.returncode == 1
    summary = _summary(res.stdout)
    text = "\n".join(summary)
    assert summary[-1].startswith("RESULT: FAILED (") and "probe" in summary[-1], text
    rows = {line.split()[0]: line for line in summary[1:] if line[:1].isalpha() and " s" in line}
    assert "FAIL(" in rows["probe"] and "FAIL(" in rows["emulation-tests"], text
    assert " ok " in rows["machine"], text
    assert "planted by the test" in (tmp_path / "logs" / "probe.log").read_text()


def test_a_spent_budget_skips_the_remaining_parts_and_says_so(built: None, tmp_path: Path) -> None:
    res = _run(_tree(tmp_path), tmp_path, GRADTEST_GPU_BUDGET="10")
    assert res.returncode == 1
    summary = _summary(res.stdout)
    text = "\n".join(summary)
    assert "SKIPPED(budget)" in text and summary[-1].startswith("RESULT: FAILED ("), text


def test_a_failing_benchmark_part_keeps_the_other_ratios(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # the GPU run gets one try: a failure in one ratio must not hide the ones measured
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_cuda_under_test", ROOT / "benchmarks" / "bench_cuda.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def chain(n: int, rows: list) -> None:
        rows.append(bench.row("first ratio", 1.5, "<= 3"))
        raise AssertionError("planted: the gradients disagree")

    def fd(n: int, rows: list) -> None:
        rows.append(bench.row("second ratio", 30.0, ">= 20"))

    monkeypatch.setattr(bench.cuda, "available", lambda: True)
    monkeypatch.setattr(bench, "ratio_chain", chain)
    monkeypatch.setattr(bench, "ratio_fd", fd)
    assert bench.main(["--quick"]) == 1
    out = capsys.readouterr().out
    assert "first ratio" in out and "second ratio" in out
    assert "bench_cuda: FAILED: the 20-op chain: AssertionError: planted" in out
    with pytest.raises(AssertionError, match="planted"):  # benchmarks/run.py's way: raised, after both
        bench.run(True)
