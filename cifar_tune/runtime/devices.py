"""The devices: which GPUs this machine offers (the one caller of ``nvidia-smi``), where the loaded Keras backend
computes, whether the installed JAX's CUDA build fits the driver, and where each worker process of one command
computes.

Placement is by ``CUDA_VISIBLE_DEVICES``, the variable every CUDA program (JAX, TensorFlow) honours: worker ``i``
of ``jobs`` sees only GPU ``i mod n`` of the ``n`` visible ones, so ``--jobs`` equal to the number of GPUs gives
one GPU per worker and more workers share them evenly, each with its slice of that GPU's memory. No scheduler:
a command's workers are fixed at its start (a cluster's placement is Ray's job, not this module's).
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import shutil
import subprocess

CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"


def _nvidia_smi(*args: str) -> str | None:
    """What ``nvidia-smi args`` writes to standard output; None without nvidia-smi or when it fails to run."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def nvidia_gpus() -> list[str]:
    """The GPUs nvidia-smi lists, as ``NAME, N GiB`` (empty without nvidia-smi or GPUs)."""
    out = _nvidia_smi("--query-gpu=name,memory.total", "--format=csv,noheader,nounits")
    gpus = []
    for line in (out or "").splitlines():
        name, _, mib = line.rpartition(",")
        if name.strip() and mib.strip().isdigit():
            gpus.append(f"{name.strip()}, {int(mib) / 1024:.0f} GiB")
    return gpus


def device_name() -> str:
    """'gpu' or 'cpu': where the current Keras backend computes (loads Keras: call it where Keras may load)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform
    if backend == "tensorflow":  # the only place the core asks TensorFlow directly: Keras has no such query
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def device_description() -> str:
    """Where training computes, for people: ``NVIDIA H200, 140 GiB`` or ``CPU, 2 cores``."""
    if device_name() == "gpu":
        gpus = nvidia_gpus()
        placed = gpu_of_this_process()  # a --jobs worker sees one GPU: name its index
        if gpus and placed is not None:
            return f"{gpus[0]} (GPU {placed})"
        if gpus:
            return f"{gpus[0]}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
        return "GPU"
    return f"CPU, {os.cpu_count()} cores"


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver supports, as ``nvidia-smi``'s header says (``CUDA Version: 13.0`` ->
    ``(13, 0)``); None without nvidia-smi or that line."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", _nvidia_smi() or "")
    return (int(found[1]), int(found[2])) if found else None


def jax_cuda_builds() -> dict[int, str]:
    """The CUDA builds of JAX installed: CUDA major -> plugin version (``{13: "0.10.2"}``; empty: CPU-only JAX)."""
    builds = {}
    for major in (12, 13):
        try:
            builds[major] = importlib.metadata.version(f"jax-cuda{major}-plugin")
        except importlib.metadata.PackageNotFoundError:
            pass
    return builds


def cuda_match(builds: dict[int, str], driver: tuple[int, int] | None) -> str:
    """One line: which CUDA build of JAX is installed and whether the driver runs it (a driver runs a CUDA major
    up to the one nvidia-smi reports), with the extra to install when it does not."""
    installed = ", ".join(f"jax-cuda{m}-plugin {v}" for m, v in sorted(builds.items())) or "no CUDA build of JAX"
    if driver is None:
        return f"{installed}; no NVIDIA driver found (nvidia-smi): training runs on the CPU"
    cuda = f"the driver supports CUDA {driver[0]}.{driver[1]}"
    fits = [m for m in builds if m <= driver[0]]
    if fits:
        return f"{installed}; {cuda}: matches (CUDA {max(fits)})"
    extra = "gpu" if driver[0] >= 13 else "gpu-cuda12"
    return f"{installed}; {cuda}: NO MATCH, install pip install 'cifar-tune[{extra}]'"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs): that variable's
    entries when set (empty or ``-1``: none), else every index nvidia-smi lists (none without nvidia-smi)."""
    if CUDA_VISIBLE in os.environ:
        entries = [e.strip() for e in os.environ[CUDA_VISIBLE].split(",") if e.strip()]
        return [] if entries[:1] == ["-1"] else entries
    out = _nvidia_smi("--query-gpu=index", "--format=csv,noheader")
    return [line.strip() for line in (out or "").splitlines() if line.strip().isdigit()]


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
