"""``python -m zegformer.train``: training and --eval-only (see ``zegformer.training.cli``)."""
import sys

from .training.cli import main

if __name__ == "__main__":
    sys.exit(main())
