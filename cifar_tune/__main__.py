"""``python -m cifar_tune`` is the ``cifar-tune`` command."""

import sys

from cifar_tune.cli import main

sys.exit(main())
