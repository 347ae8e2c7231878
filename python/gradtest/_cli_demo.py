"""``python -m gradtest demo``: checks the bundled examples and prints their reports.

One of the examples carries a deliberately wrong gradient; the demo succeeds when gradtest
catches it (and every correct gradient passes).
"""

from __future__ import annotations

import argparse
import sys

from . import examples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--html", metavar="FILE", help="also write the reports as an HTML page")


def run(args: argparse.Namespace) -> int:
    html = None
    if args.html:
        # opened before any work, so that a path that cannot be written fails at once
        try:
            html = open(args.html, "w", encoding="utf-8")
        except OSError as exc:
            print(f"gradtest demo: error: --html: cannot write {args.html!r}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
    try:
        return _run(html)
    finally:
        if html is not None:
            html.close()


def _run(html) -> int:
    pages = []
    ok = True
    for example in examples.EXAMPLES:
        report = example.check()
        print(f"# {example.title}")
        print(str(report), end="\n\n")
        pages.append(f"<h2>{example.title}</h2>{report._repr_html_()}")
        caught = not report.passed
        if caught != example.wrong:
            ok = False
            print(f"!! unexpected: {example.title} {'passed' if report.passed else 'failed'}")
    if html is not None:
        html.write("<html><body>" + "".join(pages) + "</body></html>")
    print("demo: every correct gradient passed and the wrong one was caught" if ok else "demo: FAILED")
    return 0 if ok else 1
