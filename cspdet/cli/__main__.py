"""``python -m cspdet.cli COMMAND ...`` = the ``cspdet`` command (also for ``torchrun -m cspdet.cli train ...``)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
