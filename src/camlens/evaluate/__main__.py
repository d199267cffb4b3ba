"""``python -m camlens.evaluate localization|pointing|faithfulness --data FORMAT:PATH ...``

The same options as ``camlens evaluate`` (see :func:`camlens.evaluate.runner.add_evaluate_arguments`).
"""

from __future__ import annotations

import argparse
import sys

from camlens.evaluate.runner import add_evaluate_arguments, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camlens.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluate_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
