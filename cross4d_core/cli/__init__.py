"""The ``cross4d`` command.

Each module in this package (not starting with ``_``) adds one or more subcommands
through ``register(subparsers)``; a subcommand stores its handler as ``func`` on the
parsed namespace. Modules import heavy dependencies (torch, transformers) inside their
handlers so ``cross4d --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from cross4d_core.errors import Cross4DError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cross4d",
        description="Cross4D-JEPA: 4D point-cloud encoders distilled from frozen 2D foundation models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the one place errors become messages. The project's errors
    (:class:`~cross4d_core.errors.Cross4DError`, whose message names the file or field) and
    bad input met in libraries (``ValueError`` / ``OSError``) are reported as one line, with
    the error's exit code (1; 3 for a non-finite loss); ``CROSS4D_TRACEBACK=1`` re-raises
    for debugging."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (Cross4DError, ValueError, OSError) as exc:
        if os.environ.get("CROSS4D_TRACEBACK") == "1":
            raise
        command = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
        print(f"cross4d {command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
