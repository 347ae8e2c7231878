"""Malformed objects: clear errors from the ELF reader, and seeded mutation fuzzing.

The fuzzer (tests/c/fuzz_elf.c) is built here by tests/_cbuild.py, with AddressSanitizer and
UndefinedBehaviorSanitizer around the reader and the analysis where available;
GRADTEST_FUZZ_ITERATIONS raises the iteration count (default 4000, a few seconds).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import gradtest
import pytest
from _cbuild import build as cbuild
from _cbuild import core_sources
from _cbuild import run as crun
from dispatch_fixtures.build import FIXTURES, build
from gradtest import _dispatch
from gradtest.dispatch import _core as dispatch_core



@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("fuzz_seeds")
    return [
        build(out / "k_O0.so", ["kernels.c"], ["-O0"]),
        build(out / "k_O2.so", ["kernels.c"], ["-O2"]),
        build(out / "k_noplt.so", ["kernels.c"], ["-O2", "-fno-plt"]),
        build(out / "k_strip.so", ["kernels.c"], ["-O2", "-s"]),
        build(out / "k_debug.so", ["kernels.c"], ["-O0", "-g"]),  # .debug_line for the line reader
        # aarch64 objects exercise the other decoder's operand parsing
        FIXTURES / "aarch64" / "kernels_O2.so",
        FIXTURES / "aarch64" / "kernels_noplt.so",
    ]


def test_truncated_library_is_a_clear_error(seeds, tmp_path):
    data = seeds[1].read_bytes()
    for cut in (3, 40, 64, 200, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.so"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError) as info:
            gradtest.check_dispatch(f"{path}:gt_pure_dot")
        msg = str(info.value)
        assert any(w in msg for w in ("truncated", "not an ELF", "ELF header", "past the end")), msg


@pytest.mark.parametrize(
    "patch, match",
    [
        (lambda b: b"MZ" + b[2:], "not an ELF file"),
        (lambda b: b[:4] + b"\x01" + b[5:], "32-bit"),
        (lambda b: b[:5] + b"\x02" + b[6:], "big-endian"),
        (lambda b: b[:16] + struct.pack("<H", 1) + b[18:], "not an executable or shared object"),
        (lambda b: b[:40] + struct.pack("<Q", 0) + b[48:], "no section headers"),
        (lambda b: b[:40] + struct.pack("<Q", 1 << 40) + b[48:], "section headers"),
        (lambda b: b[:32] + struct.pack("<Q", 1 << 40) + b[40:], "program headers"),
        (lambda b: b[:58] + struct.pack("<H", 8) + b[60:], "section header entry size"),
    ],
)
def test_malformed_headers_are_clear_errors(seeds, patch, match):
    data = patch(seeds[1].read_bytes())
    with pytest.raises(ValueError, match=match):
        _dispatch.Elf(data)


def test_other_bad_files(tmp_path):
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        _dispatch.Elf(str(empty))
    with pytest.raises(OSError, match="No such file"):
        _dispatch.Elf(str(tmp_path / "missing.so"))
    with pytest.raises(OSError, match="not a regular file"):
        _dispatch.Elf(str(tmp_path))
    with pytest.raises(ValueError):
        _dispatch.Elf(b"")


def test_reader_reads_what_it_should(seeds):
    elf = _dispatch.Elf(str(seeds[1]))
    assert elf.machine == 62
    name, vaddr, size, is_global = elf.lookup("gt_alloc_sum")
    assert name == "gt_alloc_sum" and size > 0 and is_global
    assert elf.function_at(vaddr)[0] == "gt_alloc_sum"
    assert elf.symbolize(vaddr + 3) == ("gt_alloc_sum", 3)
    assert elf.section(vaddr) == ".text"
    assert elf.lookup("softplus") is not None  # .symtab: static functions
    assert elf.reloc_count > 0
    stripped = _dispatch.Elf(str(seeds[3]))
    assert _dispatch.Elf(str(seeds[5])).machine == 183
    assert _dispatch.Elf(str(seeds[4])).line(vaddr) is not None
    assert stripped.lookup("softplus") is None  # gone with .symtab
    assert stripped.lookup("gt_alloc_sum") is not None  # .dynsym stays


def _fuzzer(tmp_path: Path) -> Path:
    core = core_sources("dispatch_*", "elf_reader", "disasm", "guard", "guardbuf", "gt_common")
    return cbuild("fuzz_elf.c", core, tmp_path)[0]


def test_mutation_fuzz_under_sanitizers(seeds, tmp_path):
    exe = _fuzzer(tmp_path)
    iterations = int(os.environ.get("GRADTEST_FUZZ_ITERATIONS", "4000"))
    capstone = dispatch_core.capstone_library()
    for seed in (1, 2):
        proc = crun(exe, str(seed), str(iterations), capstone, *map(str, seeds), asan_options="abort_on_error=0",
                    timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        parsed = int(proc.stdout.split("parsed")[1].split()[0])
        # both outcomes must occur, or the mutations miss the reader's checks or its success path
        assert 0 < parsed < iterations, proc.stdout


def test_fuzzer_detects_a_bad_seed_file(tmp_path):
    exe = _fuzzer(tmp_path)
    proc = crun(exe, "1", "10", "-", str(tmp_path / "missing"))
    assert proc.returncode == 2


def test_mutated_objects_through_the_extension(seeds):
    # the same idea through the Python binding, in a child so that a crash fails only this test
    code = textwrap.dedent(
        f"""
        import random, sys
        from gradtest import _dispatch
        from gradtest.dispatch import _core
        cs = _core.capstone()
        data = [open(p, 'rb').read() for p in {[str(s) for s in seeds]!r}]
        rng = random.Random(7)
        ok = bad = 0
        for it in range(1500):
            b = bytearray(rng.choice(data))
            for _ in range(rng.randint(1, 6)):
                i = rng.randrange(len(b)) if rng.random() < 0.6 else rng.randrange(min(len(b), 1024))
                b[i] = rng.randrange(256)
            if rng.random() < 0.2:
                del b[rng.randrange(1, len(b)):]
            try:
                elf = _dispatch.Elf(bytes(b))
            except (ValueError, MemoryError):
                bad += 1
                continue
            ok += 1
            syms = elf.symbols()
            for name, vaddr, size, glob in syms[:50]:
                elf.symbolize(vaddr + 1); elf.function_at(vaddr); elf.section(vaddr); elf.reloc(vaddr)
            for name, vaddr, size, glob in syms[:3]:
                try:
                    _dispatch.analyse(cs, [(None, elf)], 0, vaddr, 4, ['abort'])
                except ValueError:
                    pass
        print(ok, bad)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ok, bad = map(int, proc.stdout.split())
    assert ok > 0 and bad > 0
