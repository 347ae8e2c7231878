"""The dispatch check of C functions: the ``@jet`` of gradtest for compiled code.

:func:`gradtest.check_dispatch` routes C targets here. It runs two checks on a compiled function,
as LuxTestUtils' ``@jet`` runs JET's ``test_call`` and ``test_opt``:

* the **call** check calls the function with the given arguments, converted to its C signature,
  in a forked child process: a crash or a time-out is a finding naming the signal instead of a
  dead test run;
* the **opt** check reads the machine code of the function and of everything it reaches by direct
  calls, tail calls and the PLT inside the target modules (by default the function's own shared
  object), and reports indirect calls and jumps (dynamic dispatch), calls into the Python C API,
  allocator calls and every other call leaving the target modules. Switch jump tables and PLT/GOT
  stubs are recognised and are no dispatch; calls on error paths ending in a noreturn function
  (abort, exit, __assert_fail, ...) are listed but do not fail the check; libm and the
  stack-protector/errno helpers are allowed by default.

The analysis runs in the C core (csrc/core/elf_reader.c, dispatch_*.c) with capstone, taken from the
installed ``capstone`` wheel and loaded at run time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _dispatch
from ..report import Outcome
from . import _core
from ._policy import ALLOCATION, DEFAULT_ALLOWED_NAMES, NORETURN, PYTHON_API, is_libm, matches
from ._report import DispatchFinding, DispatchReport, half_status, opt_verdict
from ._signature import buffer_specs, convert_args, convert_result
from ._targets import Target, configured_target_modules, module_names, resolve_modules, resolve_target


def _classify(raw: dict, target: Target, modules: list[str], elfs: list[Any], allow: tuple[str, ...]) -> list[DispatchFinding]:
    functions = raw["functions"]

    def chain_of(fi: int) -> tuple[str, ...]:
        names = []
        while fi >= 0:
            names.append(functions[fi][2])
            fi = functions[fi][3]
        return tuple(reversed(names))

    findings = []
    for kind_raw, mod, address, fi, tail, error_path, callee, provider, text in raw["events"]:
        sym = elfs[mod].symbolize(address)
        where = f"{sym[0]}+{sym[1]:#x}" if sym else f"{address:#x}"
        pos = elfs[mod].line(address)
        source = None
        if pos is not None:
            directory, file, line = pos
            path = file if os.path.isabs(file) or not directory else os.path.join(directory, file)
            source = f"{path}:{line}"
        func_name = functions[fi][2]
        if kind_raw == "external_call":
            if matches(callee, PYTHON_API):
                kind = "python_api"
            elif matches(callee, ALLOCATION):
                kind = "allocation"
            else:
                kind = "external_call"
        elif kind_raw in ("indirect_call", "indirect_jump"):
            kind = "indirect_call"
            text = text + (" (indirect jump)" if kind_raw == "indirect_jump" else "")
        else:
            kind = "unresolved"
        allowed_by = matches(callee, allow) or matches(func_name, allow) or matches(kind, allow)
        if error_path:
            fails, reason = False, "on an error path ending in a noreturn call"
        elif allowed_by:
            fails, reason = False, f"allowed by allow={allowed_by!r}"
        elif kind == "external_call" and callee and is_libm(provider, callee):
            fails, reason = False, "allowed by default (libm)"
        elif kind == "external_call" and callee in DEFAULT_ALLOWED_NAMES:
            fails, reason = False, "allowed by default (stack protector / errno)"
        else:
            fails = True
            reason = {
                "indirect_call": "dynamic dispatch",
                "python_api": "calls into the Python interpreter",
                "allocation": "allocates",
                "external_call": "calls out of the target modules",
                "unresolved": "control flow the analysis could not follow",
            }[kind]
            if tail and kind != "indirect_call":
                reason += " (tail call)"
        findings.append(DispatchFinding(
            kind=kind, symbol=where, address=address, chain=chain_of(fi), library=provider, module=modules[mod],
            callee=callee, instruction=text, fails=fails, reason=reason, error_path=bool(error_path),
            source=source,
        ))
    return findings


def check_native(target: Any, args: tuple, *, target_modules: Sequence[str] | None, allow: tuple[str, ...],
                 call_broken: bool, opt_broken: bool, max_depth: int, signature: str | None,
                 timeout: float) -> DispatchReport:
    """The call and opt checks of a C target; :func:`gradtest.check_dispatch` documents the
    arguments (``allow`` already validated) and calls this for everything but Python callables."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer)) or max_depth < 0:
        raise ValueError(f"max_depth: expected a non-negative integer, got {max_depth!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout: expected a positive finite number of seconds, got {timeout!r}")
    if target_modules is not None:
        names = module_names(target_modules, "target_modules")
    else:
        names = configured_target_modules()
    tgt = resolve_target(target, signature)
    modules = resolve_modules(names, tgt.path)
    # validate the call before any work so that bad arguments raise instead of being reported
    call_plan = None
    if args:
        if tgt.signature is None:
            raise TypeError(
                "signature: the target carries no C signature; pass signature='double(const double*, size_t)' "
                "or a ctypes function with argtypes"
            )
        if tgt.address is None:
            raise ValueError(f"args: {tgt.path} could not be loaded in this process, so it cannot be called")
        call_plan = convert_args(tgt.signature, args)

    report = DispatchReport(target=tgt.name, library=tgt.path, outcomes={}, modules=modules)
    if tgt.address is None:
        report.notes.append("the library could not be loaded here: static analysis, providers of external calls unknown")

    # the call check
    if call_plan is None:
        report.outcomes["call"] = Outcome("call", "skipped", message="no arguments given: the call was not run")
    else:
        classes, bits = call_plan
        ret = tgt.signature.ret  # type: ignore[union-attr]
        ret_class = {"void": 3, "float": 1 if ret.size == 8 else 2}.get(ret.kind, 0)
        t0 = time.perf_counter()
        buffers = buffer_specs(tgt.signature, args)  # type: ignore[arg-type]
        out = _dispatch.call(tgt.address, classes, bits, ret_class, float(timeout), buffers)
        seconds = time.perf_counter() - t0
        if out["how"] == "returned":
            report.result = convert_result(ret, out["ret_bits"])
            msg = f"returned {report.result!r}" if ret.kind != "void" else "returned"
            report.outcomes["call"] = Outcome("call", half_status(False, call_broken), message=msg, seconds=seconds)
        else:
            if out["how"] == "timeout":
                desc = f"timed out after {timeout:g} s (killed with SIGKILL)"
            elif out["how"] == "overrun":
                name = out["overrun"].rsplit(" ", 1)[-1]
                size = next((a.size for a, b in zip(args, buffers) if b and b[1] == name), 0)
                desc = f"failed: {tgt.name} {out['overrun']} ({size} elements)"
            elif out["how"] == "signal":
                desc = f"crashed with {out['signal_name']}"
            else:
                desc = f"left the process with exit code {out['exit_code']} instead of returning"
            report.findings.append(DispatchFinding(
                kind="crash", symbol=tgt.name, address=0, chain=(tgt.name,), library=None, module=tgt.path,
                callee=None, instruction=desc, fails=True, reason=f"the call {desc}",
            ))
            report.outcomes["call"] = Outcome("call", half_status(True, call_broken), message=f"the call {desc}",
                                              seconds=seconds)

    # the opt check
    t0 = time.perf_counter()
    try:
        elfs = [_core.elf(p) for p in modules]
        raw = _dispatch.analyse(_core.capstone(), list(zip(modules, elfs)), 0, tgt.vaddr, int(max_depth),
                                list(NORETURN), _core.analysis_cache(modules))
    except (OSError, ValueError, ImportError) as exc:
        report.seconds = time.perf_counter() - t0
        status = "broken" if opt_broken else "error"
        report.outcomes["opt"] = Outcome("opt", status, exception=exc, message=f"analysis failed: {exc}",
                                         seconds=report.seconds)
    else:
        report.seconds = time.perf_counter() - t0
        report.functions = [f[2] for f in raw["functions"]]
        report.instructions = raw["instructions"]
        report.jump_tables = raw["jump_tables"]
        report.plt_calls = raw["plt_calls"]
        opt_findings = _classify(raw, tgt, modules, elfs, allow)
        report.findings.extend(opt_findings)
        failed, msg = opt_verdict(
            opt_findings, f"no dispatch, allocation or unexpected external call in {len(report.functions)} function(s)"
        )
        report.outcomes["opt"] = Outcome("opt", half_status(failed, opt_broken), message=msg, seconds=report.seconds)
        if raw["depth_limited"]:
            report.notes.append(f"calls deeper than max_depth={max_depth} were not followed")
    return report
