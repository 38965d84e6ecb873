"""``python -m charlstm ...`` (and ``torchrun -m charlstm train ...``): the ``charlstm`` CLI."""
import sys

from charlstm.cli import main

if __name__ == "__main__":
    sys.exit(main())
