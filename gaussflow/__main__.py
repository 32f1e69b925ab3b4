"""``python -m gaussflow``: the command line (see :mod:`gaussflow.cli`)."""

import sys

from .cli import main

sys.exit(main())
