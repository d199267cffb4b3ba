"""``python -m camlens.evaluate localization|pointing|faithfulness --data FORMAT:PATH ...``
(the options of ``camlens evaluate``, :func:`camlens.evaluate.cli.add_evaluate_arguments`)."""

import sys

from camlens.evaluate.cli import main

if __name__ == "__main__":
    sys.exit(main())
