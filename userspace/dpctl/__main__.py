"""``python -m userspace.dpctl``: the program without its console script."""

import sys

from .app import main

sys.exit(main())
