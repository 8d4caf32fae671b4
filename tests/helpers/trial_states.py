"""Waiting for a study's trials to reach given states, read straight from its SQLite file (as another process
sees them), for tests that signal a running command at the right moment."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_for_states(db: Path, want: Callable[[list[str]], bool], timeout: float = 240) -> list[str]:
    """Poll ``db`` every second until ``want(states)`` holds for the trials' states in number order (e.g.
    ``["COMPLETE", "RUNNING"]``); return them. Fails the test after ``timeout`` seconds."""
    deadline, states = time.time() + timeout, []
    while time.time() < deadline:
        time.sleep(1)
        if Path(db).exists():
            try:
                with sqlite3.connect(db) as con:
                    states = [s for (s,) in con.execute("select state from trials order by number")]
            except sqlite3.OperationalError:  # the file exists, its tables not yet (or it is locked a moment)
                continue
            if want(states):
                return states
    pytest.fail(f"the trials never reached the awaited states (last seen: {states})")
