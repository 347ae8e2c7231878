"""``python -m gradtest dispatch lib.so:symbol``: the opt check (and, with --args, no call) from the
command line. Exit codes: 0 clean, 1 findings that fail the check, 2 bad usage or a target that
cannot be read."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declares the command's options."""
    parser.add_argument("target", help="the function to analyse, as path/to/lib.so:symbol")
    parser.add_argument("--target-module", action="append", default=[], metavar="MODULE",
                        help="another shared object whose code is followed (path or loaded library name); repeatable")
    parser.add_argument("--allow", action="append", default=[], metavar="PATTERN",
                        help="fnmatch pattern of callee names (or kinds) that do not fail the check; repeatable")
    parser.add_argument("--max-depth", type=int, default=None, help="call depth followed below the target")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Runs the analysis; returns the exit code."""
    from .dispatch import DEFAULT_MAX_DEPTH, check_dispatch

    if ":" not in args.target:
        print(f"gradtest dispatch: expected lib.so:symbol, got {args.target!r}", file=sys.stderr)
        return 2
    try:
        report = check_dispatch(
            args.target,
            target_modules=args.target_module or None,
            allow=tuple(args.allow),
            max_depth=DEFAULT_MAX_DEPTH if args.max_depth is None else args.max_depth,
        )
    except (OSError, ValueError, TypeError, ImportError) as exc:
        print(f"gradtest dispatch: {exc}", file=sys.stderr)
        return 2
    if report.outcomes["opt"].status == "error":
        print(f"gradtest dispatch: {report.outcomes['opt'].message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report)
    return 0 if report.passed else 1
