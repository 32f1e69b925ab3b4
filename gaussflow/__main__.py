"""`python -m gaussflow`: the command line (see `gaussflow.cli`)."""

import sys

from .cli import main

sys.exit(main())
