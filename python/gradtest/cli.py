"""Command line: ``python -m gradtest <command>``.

Commands live in their own modules and are imported only when used, so ``gradtest demo`` never
pays for the dispatch analysis and vice versa. Exit codes: 0 success, 1 a check failed, 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> (module, one-line help); each module defines add_arguments(parser) and run(args)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gradtest._cli_demo", "check the bundled examples and print their reports"),
    "check": ("gradtest._cli_check", "check a C kernel's derivatives: lib.so:symbol"),
    "dispatch": ("gradtest._cli_dispatch", "analyse a C function for dispatch: lib.so:symbol"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the exit code."""
    parser = argparse.ArgumentParser(prog="gradtest", description="Gradient-correctness testing.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    return int(modules[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
