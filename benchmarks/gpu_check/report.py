"""``OUT/results.json`` and ``OUT/results.md``: the machine, the plan, then a section per part with its status.

``Recorder`` rewrites both after every part (and from the runner's signal handlers), each whole or not at all (a
temporary file renamed over it), into ``OUT`` and the ``--copy-to`` folder: a command killed at any moment leaves
the parts it finished, and the part it was running marked as such.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .plan import PART_NAMES


def fmt(value, digits: int = 3) -> str:
    """A table cell: ``-`` for nothing, yes/no, floats with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(head: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines; a part that measured nothing gets one row of dashes."""
    rows = rows or [["-"] * len(head)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return lines


def markdown(results: dict, tables: dict[str, Callable[[dict], list[str]]]) -> str:
    """The whole report; ``tables[part](result)`` gives a part's intro line, a blank line and its table."""
    m = results["machine"]
    gpus = m.get("gpus")
    gpu = ", ".join(f"{g['name']} ({g['memory']})" for g in gpus) if isinstance(gpus, list) and gpus else "none"
    v = m["versions"]
    facts = (f"Machine: {m['platform']}, {m['cpu_count']} CPUs, GPU: {gpu}; backend {m['backend']}, Python "
             f"{m['python']}, Keras {v['keras']}, JAX {v['jax']}, TensorFlow {v['tensorflow']}. Data: "
             f"{results['data']}. Wall time {results['seconds']:.1f} s.")
    lines = [f"# gpu_check {'(smoke) ' if results['smoke'] else ''}{results['started']}", "", facts, ""]
    lines += plan_lines(results.get("plan"))
    for name in PART_NAMES:
        part = results["parts"][name]
        limit = part.get("limit_seconds")
        earlier = f"; from the run of {part['earlier_run']}" if "earlier_run" in part else ""
        reason = f" — {part['reason']}" if "reason" in part else ""
        lines += [f"## {name}", "", f"Status: **{part['status']}**{reason} (limit {fmt(limit, 0)} s{earlier})", ""]
        body = tables[name](part)
        lines += (body[2:] if not body[0] else body) + [""]  # no intro line for a part that measured nothing
    return "\n".join(lines)


def plan_lines(plan: dict | None) -> list[str]:
    """The sizing's section: per part the rung taken, its estimate against the budget, and its sizes."""
    if not plan:
        return []
    rows = [[part, f"{p['rung'] + 1} of {p['rungs']}", fmt(p["estimate_seconds"], 0), fmt(p["budget_seconds"], 0),
             fmt(p["fits"]), ", ".join(f"{k}={v}" for k, v in p["sizes"].items())]
            for part, p in plan["parts"].items()]
    intro = (f"Sized from {plan['times_source']}: per part the first (largest) rung whose estimate fits "
             f"{plan['safety']} of its limit.")
    return ["## plan", "", intro, ""] + table(["part", "rung", "estimate s", "budget s", "fits", "sizes"], rows) + [""]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, renamed over it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def write(out: Path, results: dict, tables: dict[str, Callable[[dict], list[str]]]) -> str:
    """Write results.json and results.md into ``out``; return the Markdown."""
    md = markdown(results, tables)
    write_atomic(out / "results.json", json.dumps(results, indent=2, default=str))
    write_atomic(out / "results.md", md)
    return md


class Recorder:
    """``results`` (the whole record) and its saving: ``save()`` after every change, from any thread or a signal
    handler (a re-entrant lock: a handler may interrupt a save in the same thread)."""

    def __init__(self, results: dict, tables: dict, folders: list[Path], t0: float):
        self.results, self.tables, self.folders, self.t0 = results, tables, folders, t0
        self.lock = threading.RLock()

    def part(self, name: str, result: dict) -> None:
        """Record one part's result (finished, running or interrupted), note it in ``timeline``, and save."""
        with self.lock:
            self.results["parts"][name] = result
            self.results.setdefault("timeline", []).append(
                {"part": name, "status": result["status"], "reason": result.get("reason"),
                 "seconds": round(time.monotonic() - self.t0, 1)})
            self.save()

    def save(self) -> str:
        """Write results.json and results.md into every folder; return the Markdown."""
        with self.lock:
            self.results["seconds"] = time.monotonic() - self.t0
            md = ""
            for folder in self.folders:
                md = write(folder, self.results, self.tables)
            return md
