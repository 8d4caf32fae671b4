"""``python -m cifar_tune`` is the ``cifar-tune`` command."""

import sys

from .cli import main

sys.exit(main())
