"""``python -m lisa.train`` / ``deepspeed -m lisa.train ...``: the same as ``lisa train``."""

import sys

from .cli import main

sys.exit(main())
