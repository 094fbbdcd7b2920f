"""``python -m zegformer.evaluate.compare``: see ``zegformer.evaluation.compare_cli``."""
import sys

from ..evaluation.compare_cli import main

if __name__ == "__main__":
    sys.exit(main())
