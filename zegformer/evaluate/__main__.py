"""``python -m zegformer.evaluate``: see ``zegformer.evaluation.cli`` and ``--help``."""
import sys

from ..evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
