"""``python -m kvraft``: the ``kvraft`` command, whose entry lives in the composition root
:mod:`kvraft_cmd` (above ``kvraft`` and ``api``). Nothing imports this module."""

import sys

from kvraft_cmd.main import main

sys.exit(main())
