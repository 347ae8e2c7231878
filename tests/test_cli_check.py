"""``python -m gradtest check``: exit codes, report and JSON output, on kernels built with cc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradtest
from gradtest.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "kernels"
CC = os.environ.get("CC", "cc")

pytestmark = pytest.mark.skipif(shutil.which(CC) is None, reason="no C compiler")

CRASHY = r"""
#include <stdlib.h>
#include <gradtest.h>
int f(void *ctx, size_t n, const double *x, double *y) { (void)ctx; *y = x[0] * x[0] + (double)n; return 0; }
int g_abort(void *ctx, size_t n, const double *x, double *g) { (void)ctx; (void)n; (void)x; (void)g; abort(); }
int f_fails(void *ctx, size_t n, const double *x, double *y) { (void)ctx; (void)n; (void)x; (void)y; return 9; }
int g(void *ctx, size_t n, const double *x, double *gr)
{ (void)ctx; for (size_t i = 0; i < n; i++) gr[i] = i == 0 ? 2.0 * x[0] : 0.0; return 0; }
"""


@pytest.fixture(scope="module")
def libs(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "crashy.c").write_text(CRASHY)
    out = {}
    for name, src in (("stencil", EXAMPLES / "stencil.c"), ("ls", EXAMPLES / "least_squares.c"),
                      ("crashy", tmp / "crashy.c")):
        lib = tmp / f"lib{name}.so"
        run = subprocess.run([CC, "-shared", "-fPIC", "-O2", f"-I{gradtest.get_include()}", str(src), "-o",
                              str(lib), "-lm"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        out[name] = str(lib)
    return out


def test_pass_and_fail_exit_codes(libs, capsys):
    assert main(["check", f"{libs['stencil']}:stencil_f", "--gradient", "stencil_grad", "--n", "12"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "user" in out
    assert main(["check", f"{libs['stencil']}:stencil_f", "--gradient", "stencil_grad_wrong"]) == 1
    assert "FAILED" in capsys.readouterr().out
    # a backend declared broken is an expected failure
    assert main(["check", f"{libs['stencil']}:stencil_f", "--gradient", "stencil_grad_wrong",
                 "--broken", "user"]) == 0


def test_vector_function_json(libs, capsys):
    code = main(["check", f"{libs['stencil']}:stencil_apply", "--vjp", "stencil_apply_vjp_wrong",
                 "--jvp", "stencil_apply_jvp", "--n-out", "n", "--n", "9", "--json", "--seed", "4",
                 "--threads", "2"])
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False
    assert doc["outcomes"]["user_vjp"]["status"] == "fail"
    assert doc["outcomes"]["user_jvp"]["status"] == "pass"
    assert doc["n_elements"] == 9
    assert doc["outcomes"]["user_vjp"]["worst"]["element"].startswith("args[0][")


def test_x_file_and_float32(libs, tmp_path, capsys):
    x = np.random.default_rng(1).standard_normal(7)
    np.save(tmp_path / "x.npy", x)
    assert main(["check", f"{libs['stencil']}:stencil_f", "--gradient", "stencil_grad",
                 "--x", str(tmp_path / "x.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_elements"] == 7
    np.save(tmp_path / "x32.npy", x.astype(np.float32))
    assert main(["check", f"{libs['stencil']}:stencil_f32", "--gradient", "stencil_grad_f32",
                 "--x", str(tmp_path / "x32.npy"), "--dtype", "float32"]) == 0
    capsys.readouterr()
    # a float64 file for a float32 kernel is bad usage
    assert main(["check", f"{libs['stencil']}:stencil_f32", "--gradient", "stencil_grad_f32",
                 "--x", str(tmp_path / "x.npy"), "--dtype", "float32"]) == 2
    assert "float64" in capsys.readouterr().err


def test_crash_and_failure_are_failed_checks(libs, capsys):
    assert main(["check", f"{libs['crashy']}:f", "--gradient", "g_abort", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    exc = doc["outcomes"]["user"]["exception"]
    assert exc["type"] == "KernelCrash" and exc["signal_name"] == "SIGABRT" and exc["stage"] == "gradient"
    assert main(["check", f"{libs['crashy']}:f_fails", "--gradient", "g"]) == 1
    assert "status 9" in capsys.readouterr().out
    assert main(["check", f"{libs['crashy']}:f", "--gradient", "g", "--no-isolate"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["LIB:nope", "--gradient", "g"], "cannot load library"),
    (["{crashy}:nope", "--gradient", "g"], "symbol 'nope' not found"),
    (["{crashy}:f", "--gradient", "nope"], "symbol 'nope' not found"),
    (["{crashy}:f"], "nothing to check"),
    (["no-colon"], "expected LIB:SYMBOL"),
    (["{crashy}:f", "--gradient", "g", "--n", "0"], "--n"),
    (["{crashy}:f", "--gradient", "g", "--x", "/nonexistent.npy"], "--x"),
    (["{crashy}:f", "--gradient", "g", "--n-out", "two"], "--n-out"),
    (["{crashy}:f", "--gradient", "g", "--n-out", "3"], "gradient: applies to scalar functions"),
    (["{crashy}:f", "--gradient", "g", "--timeout", "1", "--no-isolate"], "--timeout"),
    (["{crashy}:f", "--gradient", "g", "--method", "sideways"], "invalid choice"),
    (["{crashy}:f", "--gradient", "g", "--broken", "user_vjp"], "unknown backend"),
])
def test_bad_usage_exits_2(libs, capsys, argv, message):
    argv = [a.format(**libs) for a in argv]
    assert main(["check", *argv]) == 2
    assert message in capsys.readouterr().err


def test_end_to_end_subprocess(libs):
    # the gradtest this process imported: the source tree's or an installed one
    here = str(Path(gradtest.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "gradtest", "check", f"{libs['stencil']}:stencil_f",
                          "--gradient", "stencil_grad_wrong", "--n", "5"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "args[0][0]" in run.stdout


# ---- issue 12, item 15: usage errors a user can act on ----------------------------------------


def test_x_that_is_not_a_npy_file_says_so(libs, tmp_path, capsys):
    text = tmp_path / "x.txt"
    text.write_text("1 2 3\n")
    assert main(["check", f"{libs['crashy']}:f", "--gradient", "g", "--x", str(text)]) == 2
    err = capsys.readouterr().err
    assert "--x: " in err and "is not a .npy file; expected one array saved with numpy.save" in err
    archive = tmp_path / "x.npz"
    np.savez(archive, x=np.ones(3))
    assert main(["check", f"{libs['crashy']}:f", "--gradient", "g", "--x", str(archive)]) == 2
    assert "is a .npz archive" in capsys.readouterr().err
    assert main(["check", f"{libs['crashy']}:f", "--gradient", "g", "--x", str(tmp_path / "none.npy")]) == 2
    assert "--x: cannot read" in capsys.readouterr().err


def test_broken_with_an_unknown_name_lists_the_kernels_backends(libs, capsys):
    assert main(["check", f"{libs['crashy']}:f", "--gradient", "g", "--broken", "reverse"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "gradtest check: error: --broken: unknown backend 'reverse'; this kernel's backends: user"


def test_demo_with_an_unwritable_html_path_fails_before_any_work(tmp_path):
    target = tmp_path / "missing-dir" / "report.html"
    # the child runs the gradtest this test imported (the source tree's, or the installed one)
    package_root = str(Path(gradtest.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "gradtest", "demo", "--html", str(target)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stdout == ""  # no example was checked
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradtest demo: error: --html: cannot write")


def test_demo_writes_the_html_page(tmp_path, capsys):
    page = tmp_path / "demo.html"
    assert main(["demo", "--html", str(page)]) == 0
    assert page.read_text().startswith("<html><body><h2>")
