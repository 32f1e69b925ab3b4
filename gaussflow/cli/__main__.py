"""``python -m gaussflow.cli``."""

import sys

from . import main

sys.exit(main())
