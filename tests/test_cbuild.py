"""The shared builder of the C test programs (tests/_cbuild.py): it must fail on a program that
does not compile, and where it reports sanitizers they must catch overflows and leaks."""

from __future__ import annotations

import pytest
from _cbuild import build, core_sources, run, run_c_tests

OVERFLOW = """
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    volatile int i = 4;
    char *p = malloc(4);
    p[i] = 1;
    free(p);
    printf("1 checks, 0 failed\\n");
    return 0;
}
"""

LEAK = """
#include <stdio.h>
#include <stdlib.h>
void *volatile keep;
int main(void)
{
    keep = malloc(64);
    keep = NULL;
    printf("1 checks, 0 failed\\n");
    return 0;
}
"""


def test_a_program_that_does_not_compile_fails(tmp_path):
    src = tmp_path / "broken.c"
    src.write_text("int main(void) { return undefined_name; }\n")
    with pytest.raises(AssertionError, match="does not compile"):
        build(str(src), [], tmp_path)


def test_warnings_are_errors(tmp_path):
    src = tmp_path / "warns.c"
    src.write_text("int main(void) { int unused; return 0; }\n")
    with pytest.raises(AssertionError, match="does not compile"):
        build(str(src), [], tmp_path)


# UBSan's object-size check may see the overflow before ASan does
@pytest.mark.parametrize("source, reports", [(OVERFLOW, ("heap-buffer-overflow", "runtime error")),
                                             (LEAK, ("LeakSanitizer",))])
def test_sanitizers_catch_what_they_are_for(tmp_path, source, reports):
    src = tmp_path / "bad.c"
    src.write_text(source)
    exe, sanitized = build(str(src), [], tmp_path)
    if not sanitized:
        pytest.skip("no sanitizer runtime here: programs run unsanitized")
    proc = run(exe)
    if source is LEAK and proc.returncode == 0 and "LeakSanitizer" not in proc.stderr:
        pytest.skip("LeakSanitizer cannot run here (ptrace)")
    assert proc.returncode != 0 and any(r in proc.stderr for r in reports), proc.stderr[-2000:]
    with pytest.raises(AssertionError):
        run_c_tests(str(src), [], tmp_path)


def test_core_sources_must_exist():
    assert [p.name for p in core_sources("gt_common")] == ["gt_common.c"]
    assert len(core_sources("dispatch_*")) >= 7
    with pytest.raises(AssertionError, match="no core source"):
        core_sources("no_such_file")


def test_a_plain_build_on_request(tmp_path):
    src = tmp_path / "bad.c"
    src.write_text(OVERFLOW)
    exe, sanitized = build(str(src), [], tmp_path, sanitize=False)
    assert not sanitized
    assert run(exe).returncode == 0  # unseen without the sanitizers: what valgrind runs need
