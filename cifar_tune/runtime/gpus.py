"""Which GPUs this machine offers, and where each worker process of one command computes.

Placement is by ``CUDA_VISIBLE_DEVICES``, the variable every CUDA program (JAX, TensorFlow) honours: worker ``i``
of ``jobs`` sees only GPU ``i mod n`` of the ``n`` visible ones, so ``--jobs`` equal to the number of GPUs gives
one GPU per worker and more workers share them evenly, each with its slice of that GPU's memory. No scheduler:
a command's workers are fixed at its start (a cluster's placement is Ray's job, not this module's).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess

CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs): that variable's
    entries when set (empty or ``-1``: none), else every index nvidia-smi lists (none without nvidia-smi)."""
    if CUDA_VISIBLE in os.environ:
        entries = [e.strip() for e in os.environ[CUDA_VISIBLE].split(",") if e.strip()]
        return [] if entries[:1] == ["-1"] else entries
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def default_jobs(jobs: int | None, jobs_per_gpu: int | None, gpus: list[str]) -> int:
    """Worker processes for a command: ``jobs`` when given; else ``jobs_per_gpu`` (default 1) per visible GPU, so
    that on a GPU machine every GPU is used; 1 without GPUs."""
    if jobs is not None:
        return jobs
    return max(1, len(gpus) * (jobs_per_gpu or 1))


def memory_share_env(n_jobs: int) -> dict[str, str]:
    """Environment variables that give each of ``n_jobs`` processes sharing one GPU its share of the memory."""
    if n_jobs <= 1:
        return {}
    # JAX preallocates 75% of the GPU by default: a second process would find too little. Each worker instead
    # takes an equal slice of 90% (10% left for the CUDA contexts); the fraction caps its allocator either way.
    share = math.floor(90 / n_jobs) / 100
    return {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "true",  # claim the slice up front: workers cannot starve each other
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{share:.2f}",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # TensorFlow has no per-process fraction variable; grow on demand
    }


def worker_placement(slot: int, jobs: int, jobs_per_gpu: int | None, gpus: list[str]) -> dict[str, str]:
    """The environment of worker ``slot`` (1-based) of ``jobs``: its GPU (``CUDA_VISIBLE_DEVICES``, round robin over
    ``gpus``) and its memory share (``jobs_per_gpu``, else as many as share that GPU). Without GPUs only the share
    of one device, as before there were several."""
    if not gpus:
        return memory_share_env(jobs)
    sharing = jobs_per_gpu or math.ceil(jobs / len(gpus))
    return {CUDA_VISIBLE: gpus[(slot - 1) % len(gpus)], **memory_share_env(sharing)}


def gpu_of_this_process() -> str | None:
    """The GPU a placed worker was given (its only ``CUDA_VISIBLE_DEVICES`` entry), else None."""
    entries = os.environ.get(CUDA_VISIBLE, "").split(",")
    return entries[0].strip() if len(entries) == 1 and entries[0].strip() not in ("", "-1") else None
