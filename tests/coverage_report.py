"""Prints the pass rate of each AD engine on the NumPy/SciPy coverage suite.

Run from the repository root: ``PYTHONPATH=python python tests/coverage_report.py [-v] [--expected] [--order2]``.
Each case is one third-party-style gradient check (``tests/_coverage_cases.py``); the counts are
passes, unsupported functions (NotImplementedError naming them), wrong gradients, silent zeros
and other errors. ``-v`` lists every case that did not pass, with the engine's message;
``--expected`` prints the ``UNSUPPORTED`` table of tests/test_coverage.py instead; ``--order2``
also counts reverse-over-reverse Hessian-vector products.
"""

from __future__ import annotations

import collections
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _coverage_cases import all_cases, run_case  # noqa: E402

KINDS = ("pass", "unsupported", "wrong", "silent_zero", "error")


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    expected = "--expected" in argv
    unsupported: list[tuple[str, str, str]] = []
    cases = all_cases()
    totals: dict[str, collections.Counter[str]] = {}
    for engine in ("forward", "reverse"):
        counts: collections.Counter[str] = collections.Counter()
        for c in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kind, message = run_case(c, engine)
            counts[kind] += 1
            if kind == "unsupported":
                unsupported.append((c.name, engine, message))
            if verbose and kind != "pass":
                print(f"{engine:8s} {kind:12s} {c.name}: {message[:160]}")
        totals[engine] = counts
    if expected:
        print("UNSUPPORTED: dict[tuple[str, str], str] = {")
        for name, engine, message in sorted(unsupported):
            reason = message.split(" (at ")[0].split(";")[0][:90].replace('"', "'")
            print(f'    ({name!r}, {engine!r}): "{reason}",')
        print("}")
        return 0
    print(f"{len(cases)} cases per engine")
    print("engine   " + "  ".join(f"{k:>11s}" for k in KINDS) + "   pass rate")
    for engine, counts in totals.items():
        rate = 100.0 * counts["pass"] / len(cases)
        print(f"{engine:8s} " + "  ".join(f"{counts[k]:11d}" for k in KINDS) + f"   {rate:6.1f}%")
    if "--order2" in argv:
        second = _second_order(verbose)
        print("reverse order 2 (Hessian-vector products) on the float64 cases whose first order passes: "
              + ", ".join(f"{k} {n}" for k, n in sorted(second.items())))
    return 0


def _second_order(verbose: bool) -> collections.Counter[str]:
    import gradtest
    from _coverage_cases import CASES
    counts: collections.Counter[str] = collections.Counter()
    for c in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if run_case(c, "reverse")[0] != "pass":
                continue
            report = gradtest.check_gradients(c.f, *c.args, backends=["reverse"], order=2, kwargs=c.kwargs)
        outcome = report.outcomes["reverse:hvp"]
        kind = outcome.status
        if kind == "error" and isinstance(outcome.exception, NotImplementedError):
            kind = "refused"
        counts[kind] += 1
        if verbose and kind != "pass":
            print(f"order 2  {kind:12s} {c.name}: {outcome.message[:160]}")
    return counts


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
