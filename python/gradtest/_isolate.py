"""A whole gradient check of a Python ``f`` in a forked child (``check_gradients(...,
isolate=True)``): a crash or a hang of f, or of a C extension it calls, becomes a report instead
of the end of the caller's process.

The child runs the check and sends the report back through a pipe, announcing each stage (the
ground truth, each backend) before it runs. When the child dies, or runs past ``timeout``, the
parent kills its process group (so nothing f started is left behind) and knows the stage it died
in: a backend's stage makes that backend an error, and the check runs again in a new child with
that backend answered by its crash; any other stage (the ground truth, f's first call) ends the
check with no ground truth.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from .ckernel import KernelCrash, KernelTimeout
from .report import GradientReport

_local = threading.local()
_HEADER = struct.Struct("<Q")


def announce(stage: str) -> None:
    """Tells the parent (in an isolated child; a no-op otherwise) that ``stage`` starts."""
    send = getattr(_local, "send", None)
    if send is not None:
        send(("stage", stage))


def crash_of(stage: str) -> BaseException | None:
    """The crash an earlier child died of in ``stage`` (a backend's), to report instead of running
    the stage again; None when it did not crash, or outside an isolated check."""
    return getattr(_local, "crashed", {}).get(stage)


def check_in_child(produce: Callable[[], GradientReport], function_name: str, n_elements: int,
                   timeout: float | None) -> GradientReport:
    """``produce()`` (the whole check) in forked children, as the module docstring says.

    Exceptions ``produce`` raises (bad options found late) are raised here; warnings it issued
    are issued again here.
    """
    crashed: dict[str, BaseException] = {}
    while True:
        kind, payload = _fork_once(produce, crashed, timeout)
        if kind == "report":
            report, caught = payload
            for category, message in caught:
                warnings.warn(message, category, stacklevel=4)
            return report
        if kind == "raised":
            raise payload
        stage, crash = payload
        if stage.startswith("backend ") and stage[len("backend "):] not in crashed:
            crashed[stage[len("backend "):]] = crash
            continue
        return GradientReport(function_name, {}, mode="none", n_elements=n_elements,
                              notes=[f"isolate: {crash}"], ground_truth_error=crash)


def _fork_once(produce: Callable[[], GradientReport], crashed: dict[str, BaseException],
               timeout: float | None) -> tuple[str, Any]:
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ (and JAX, once imported) warn that forking a process with threads may
            # deadlock the child; isolation is asked for, and timeout= covers a deadlock
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            pid = os.fork()
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # the child: never returns into the caller's code
        os.close(read_end)
        _child(produce, crashed, write_end)
    os.close(write_end)
    try:
        os.setpgid(pid, pid)  # also done by the child: whichever runs first
    except OSError:
        pass  # the child already did it, or has already exited
    try:
        messages, timed_out = _read(read_end, timeout)
    finally:
        os.close(read_end)
        _kill_group(pid)
        _, status = os.waitpid(pid, 0)
    stage = "f's first call"
    for kind, payload in messages:
        if kind == "stage":
            stage = payload
        elif kind in ("report", "raised"):
            return kind, payload
    return "died", (stage, _crash(stage, status, timed_out, timeout))


def _child(produce: Callable[[], GradientReport], crashed: dict[str, BaseException], fd: int) -> None:
    code = 70
    try:
        os.setpgid(0, 0)
        _local.send = lambda message: _send(fd, message)
        _local.crashed = {name: crash for name, crash in crashed.items()}
        with warnings.catch_warnings(record=True) as caught:
            report = produce()
        _send(fd, ("report", (_portable(report), [(w.category, str(w.message)) for w in caught])))
        code = 0
    except Exception as exc:  # gradtest's own error (bad options found late): the caller's
        _send(fd, ("raised", _portable_exception(exc)))
        code = 0
    except BaseException as exc:  # SystemExit, KeyboardInterrupt from f: a death in its stage
        sys.stderr.write(f"gradtest isolate: f raised {type(exc).__name__}: {exc}\n")
        code = 71
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _send(fd: int, message: tuple[str, Any]) -> None:
    data = pickle.dumps(message)
    data = _HEADER.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _read(fd: int, timeout: float | None) -> tuple[list[tuple[str, Any]], bool]:
    """The messages the child sent until it closed the pipe; True when it ran past ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    buffer = b""
    messages = []
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return messages, True
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return messages, False
        buffer += chunk
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            messages.append(pickle.loads(buffer[_HEADER.size:_HEADER.size + size]))
            buffer = buffer[_HEADER.size + size:]


def _kill_group(pid: int) -> None:
    """Kills the child's process group: the child, if still running, and whatever f started."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


def _crash(stage: str, status: int, timed_out: bool, timeout: float | None) -> BaseException:
    where = f"while {stage} ran" if stage.startswith("backend ") else f"in {stage}"
    if timed_out:
        return KernelTimeout(f"the isolated check ran past timeout={timeout:g} s {where} and was killed",
                             stage=stage, limit=float(timeout or 0.0), signal=int(signal.SIGKILL),
                             signal_name="SIGKILL")
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return KernelCrash(f"f crashed the isolated check {where}: killed by {name} (signal {number})",
                           stage=stage, signal=number, signal_name=name)
    code = os.waitstatus_to_exitcode(status)
    how = "raised SystemExit or KeyboardInterrupt" if code == 71 else f"exited with status {code}"
    return KernelCrash(f"f ended the isolated check {where}: it {how} before the check finished",
                       stage=stage, exit_code=code)


def _portable_exception(exc: BaseException | None) -> BaseException | None:
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # an exception of a class defined in a function, holding a lock...
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _portable(report: GradientReport) -> GradientReport:
    """The report, or a copy that pickles: exceptions that do not pickle become RuntimeErrors
    with their text, and a ground-truth tree that does not (an instance of a class defined in a
    function) stays in the child, with a note."""
    try:
        pickle.loads(pickle.dumps(report))
        return report
    except Exception:
        pass
    notes = list(report.notes)
    tree = report.ground_truth
    try:
        pickle.loads(pickle.dumps(tree))
    except Exception:
        tree = None
        notes.append("isolate: the ground-truth tree does not pickle, so it stayed in the child "
                     "process; the outcomes are complete")
    outcomes = {name: dataclasses.replace(o, exception=_portable_exception(o.exception))
                for name, o in report.outcomes.items()}
    return dataclasses.replace(report, outcomes=outcomes, ground_truth=tree, notes=notes,
                               ground_truth_error=_portable_exception(report.ground_truth_error))
