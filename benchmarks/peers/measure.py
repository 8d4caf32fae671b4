"""Measuring one tool's process from outside: wall time, resident memory of its whole process tree, disk left.

Memory is the sum of VmRSS over the process and all its descendants (cifar-tune's worker processes, Ray's raylet,
GCS and workers), sampled every ``interval`` seconds from ``/proc``: what the machine gives the tool. Shared pages
(libraries, Ray's object store) count once per process that maps them, so a many-process tool is overstated by
what its processes share; the per-process figures are in the series.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree_rss_mb(pid: int) -> tuple[float, int]:
    """(resident MB summed over ``pid`` and its descendants, number of processes); (0, 0) once it is gone."""
    kids, todo, total, n = _children(), [pid], 0.0, 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_MB
            n += 1
        except (OSError, IndexError, ValueError):
            continue
    return total, n


def run_measured(cmd: list[str], log: Path, env: dict | None = None, interval: float = 0.5) -> dict:
    """Run ``cmd`` (stdout and stderr to ``log``), sampling its tree's memory; returns ``start`` (wall-clock s),
    ``wall_s``, ``returncode`` and ``series`` ([t, MB, processes] per sample)."""
    series: list[list[float]] = []
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                mb, n = tree_rss_mb(proc.pid)
                if n:
                    series.append([time.time(), round(mb, 1), n])
                stop.wait(interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        stop.set()
        thread.join()
    return {"start": start, "wall_s": time.time() - start, "returncode": code, "series": series}


def du_bytes(path: Path) -> int:
    """Bytes of regular files under ``path`` (0 if it does not exist)."""
    p = Path(path)
    if not p.exists():
        return 0
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def rss_at(series: list[list[float]], t: float) -> float | None:
    """The last memory sample (MB) taken at or before wall-clock ``t``."""
    before = [s[1] for s in series if s[0] <= t]
    return before[-1] if before else None


def growth_per_trial(series: list[list[float]], trial_ends: list[float]) -> float | None:
    """Least-squares slope (MB per trial) of the tree's memory sampled at each trial's end, over trial order."""
    points = [(i, m) for i, m in enumerate(rss_at(series, t) for t in trial_ends) if m is not None]
    if len(points) < 3:
        return None
    i, m = np.array(points, dtype=float).T
    return float(np.polyfit(i, m, 1)[0])
