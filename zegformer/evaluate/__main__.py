"""``python -m zegformer.evaluate``: see ``zegformer.evaluate.cli`` and ``--help``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
