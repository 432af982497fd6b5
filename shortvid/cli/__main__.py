"""``python -m shortvid.cli``: the ``shortvid`` command."""

import sys

from . import main

sys.exit(main())
