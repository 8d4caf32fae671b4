"""A stand-in ``nvidia-smi`` on ``PATH`` that lists N GPUs (the GPU-placement and doctor tests: no GPU here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SCRIPT = """#!/bin/sh
# fake nvidia-smi: {n} GPUs, driver CUDA {cuda}
case "$*" in
  *--query-gpu=name,memory.total*) i=0; while [ $i -lt {n} ]; do echo "NVIDIA H200, 143771"; i=$((i+1)); done ;;
  *--query-gpu=index*) i=0; while [ $i -lt {n} ]; do echo "$i"; i=$((i+1)); done ;;
  *) echo "| NVIDIA-SMI 580.00   Driver Version: 580.00   CUDA Version: {cuda}     |" ;;
esac
"""


def fake_nvidia_smi(folder: Path, n: int = 4, cuda: str = "13.0") -> dict[str, str]:
    """Write the stand-in into ``folder``; -> the environment with it first on ``PATH``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(SCRIPT.format(n=n, cuda=cuda))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}
