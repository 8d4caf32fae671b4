"""Words for what the commands print: a count with its noun in the right number (``1 trial``, ``2 trials``)."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None, spec: str = "") -> str:
    """``n`` and ``noun``, the noun in the plural unless ``n`` is 1: ``count(1, "epoch")`` is ``"1 epoch"``,
    ``count(3, "process", "processes")`` is ``"3 processes"``; ``spec`` formats the number (``","``: 45,000)."""
    return f"{n:{spec}} {noun if n == 1 else plural or noun + 's'}"
