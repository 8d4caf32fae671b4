"""``python benchmarks/gpu_check.py [--smoke] --out OUT ...``: runs the check, the package ``benchmarks/gpu_check/``.

The check lives in the folder beside this file (its docstring says what it does, ``benchmarks/gpu_check.md`` how
to run it on a lent GPU); this script only puts the checkout first on ``sys.path``, so that ``benchmarks.gpu_check``
and this checkout's ``cifar_tune`` import (as the product commands it starts get them on ``PYTHONPATH``), even on
a machine where cifar-tune is not installed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_check.runner import main  # noqa: E402  (the package, not this file: a folder wins)

if __name__ == "__main__":
    sys.exit(main())
