"""``python -m camlens ...``: the same as the ``camlens`` command."""

import sys

from camlens.cli import main

if __name__ == "__main__":
    sys.exit(main())
