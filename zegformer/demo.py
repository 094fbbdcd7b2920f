"""``python -m zegformer.demo``: the official-style demo CLI (see ``zegformer.faces.demo``)."""
import sys

from .faces.demo import main

if __name__ == "__main__":
    sys.exit(main())
