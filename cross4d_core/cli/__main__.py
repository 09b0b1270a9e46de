"""``python -m cross4d_core.cli`` = the ``cross4d`` command (e.g. as a torchrun script target)."""
import sys

from cross4d_core.cli import main

sys.exit(main())
