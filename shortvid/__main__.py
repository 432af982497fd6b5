"""``python -m shortvid``: the ``shortvid`` command, also as torchrun starts it
(``torchrun --nproc-per-node N -m shortvid train ...``)."""

import sys

from .cli import main

sys.exit(main())
