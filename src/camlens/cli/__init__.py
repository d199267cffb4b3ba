"""The ``camlens`` command line: ``explain`` photos, ``caption`` and ``vqa`` (Sec. 8), list a
model's ``layers``, list ``methods``, run the paper's ``evaluate`` protocols, ``segment`` with SEC
from Grad-CAM or CAM seeds, ``serve`` the web app, run human ``study``-ies (Sec. 5), ``dissect``
a layer and ``diagnose`` failures, adversarial images and bias (Secs. 6-7).

    camlens explain sample:chelsea photos/ --out explanations
    camlens layers --model path/to/net.py:build
    camlens methods

Exit codes: 0 all done; 1 some images failed (the others finished); 2 a usage error, or no
image could be explained; 3 an internal error (rerun with --debug for the traceback).
A problem with one image (unreadable, refused by the model, non-finite scores) is one line on
stderr and the run goes on; a problem with the arguments stops it.

One module per command, each with
``add(subparsers)`` and ``run(args)``; shared option groups are parent parsers in
:mod:`camlens.cli.options`; the work itself lives in the library (:mod:`camlens.pipeline.images`,
:mod:`camlens.output`). The parser is the standard library's argparse, kept on purpose: the CLI
works out of the box with no extra dependency, and argparse's subcommands and parent parsers
already give one place per shared option group; the one-line error format is a small subclass.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from typing import TextIO

from tqdm import tqdm

import camlens
from camlens import io as cio
from camlens.allocator import keep_freed_memory
from camlens.errors import ExplainError
from camlens.loading import CliError

__all__ = ["main", "build_parser", "CliError"]

PROG = "camlens"


def one_line(text: str) -> str:
    """``text`` with every run of white space (newlines too) as one space."""
    return " ".join(str(text).split())


def say(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` (to stdout by default) without garbling a progress bar."""
    out = stream or sys.stdout
    tqdm.write(text, file=out)
    out.flush()


def error(message: str) -> None:
    say(f"{PROG}: error: {one_line(message)}", sys.stderr)


def warn(message: str) -> None:
    say(f"{PROG}: warning: {one_line(message)}", sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in camlens' format (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from camlens.cli import (
        caption,
        diagnose,
        dissect,
        evaluate,
        explain,
        layers,
        methods,
        segment,
        serve,
        study,
        vqa,
    )

    parser = _Parser(
        prog=PROG,
        description="Grad-CAM and its family (Selvaraju et al.): visual explanations of what an "
                    "image classifier looks at.",
        epilog="exit codes: 0 done; 1 some images failed; 2 usage error or no image explained; "
               "3 internal error",
    )
    parser.add_argument("--version", action="version", version=f"camlens {camlens.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in (explain, caption, vqa, layers, evaluate, segment, serve, study, dissect,
                    diagnose, methods):
        command.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``camlens`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    code."""
    parser = build_parser()
    keep_freed_memory()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        with warnings.catch_warnings():
            if not debug:  # one line each, like the errors
                warnings.showwarning = _show_warning
            return int(args.func(args))
    except (CliError, ExplainError, cio.ImageError) as exc:
        if debug:
            traceback.print_exc()
        error(str(exc))
        return getattr(exc, "code", 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `camlens layers | head`
        return 0
    except Exception as exc:  # noqa: BLE001 - unexpected: one line, or the traceback with --debug
        if debug:
            traceback.print_exc()
        else:
            error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)")
        return 3


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    say(f"{PROG}: warning: {one_line(str(message))}", file or sys.stderr)
