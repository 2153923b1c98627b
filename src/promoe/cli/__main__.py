"""``python -m promoe.cli``: the ``promoe`` command."""

import sys

from promoe.cli import main

sys.exit(main())
