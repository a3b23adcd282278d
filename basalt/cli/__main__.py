"""``python -m basalt.cli``."""

import sys

from . import main

sys.exit(main())
