"""Where things are: the checkout's root (tests read its docs, search spaces, committed results and scripts)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
