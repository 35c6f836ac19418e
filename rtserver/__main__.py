"""``python -m rtserver`` is the ``rtserver`` command."""

import sys

from rtserver.cli import main

sys.exit(main())
