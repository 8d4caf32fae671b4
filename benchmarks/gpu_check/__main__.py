"""``python -m benchmarks.gpu_check`` (from the checkout's root): the same as ``python benchmarks/gpu_check.py``."""

import sys

from .runner import main

sys.argv[0] = "python -m benchmarks.gpu_check"  # argparse's usage line, instead of "__main__.py"
sys.exit(main())
