"""``camlens evaluate``: the paper's evaluations over a dataset (see :mod:`camlens.evaluate`)."""

from __future__ import annotations

import argparse
from typing import Any

from camlens.errors import ExplainError
from camlens.loading import CliError


def add(sub: Any) -> None:
    from camlens.evaluate.cli import add_evaluate_arguments

    ev = sub.add_parser("evaluate", help="the paper's evaluations over a dataset",
                        description="Weakly-supervised localisation (Table 1), the pointing game "
                                    "(with top-5 + rejection), faithfulness (rank correlation "
                                    "with occlusion), captioning's word pointing and region "
                                    "inside/outside ratio (Sec. 8.1), or the VQA answer maps' "
                                    "rank correlations (Sec. 8.2) over a dataset; per-image CSV "
                                    "rows, resumable, and a summary table.")
    add_evaluate_arguments(ev)
    ev.add_argument("--debug", action="store_true", help="show tracebacks")
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The library's dataset errors (a bad spec, a missing folder, an unreadable annotation, an
    unknown net) are the user's input, so they become one-line errors with exit code 2."""
    from camlens.evaluate.cli import run_cli
    from camlens.pipeline.distributed import session

    try:
        with session():  # the Ray an --engine ray run starts ends with it
            return run_cli(args)
    except (ValueError, LookupError, OSError) as exc:
        if isinstance(exc, ExplainError):
            raise
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        raise CliError(str(message)) from exc
