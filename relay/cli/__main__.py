"""``python -m relay.cli``: the ``relay`` command without its console script (the tests run it this way)."""

import sys

from relay.cli import main

sys.exit(main())
