"""``python -m mmemo`` is the ``mmemo`` command."""

import sys

from mmemo.cli import main

sys.exit(main())
