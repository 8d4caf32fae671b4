"""Shared test helper: stopping a server process started by a test as a user would, with Ctrl-C."""

from __future__ import annotations

import signal
import subprocess


def interrupt(proc: subprocess.Popen, timeout: float = 20) -> tuple[str, str]:
    """Send SIGINT to ``proc`` and return its (stdout, stderr); killed (SIGKILL) if it has not ended within
    ``timeout`` seconds, so a test never leaves it running (its return code then says so)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()
