"""``OUT/results.json`` and ``OUT/results.md``: the machine, then a section per part with its status and table."""

from __future__ import annotations

import json
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
    for name in PART_NAMES:
        part = results["parts"][name]
        limit = part.get("limit_seconds")
        lines += [f"## {name}", "", f"Status: **{part['status']}**" + (f" — {part['reason']}" if "reason" in part
                                                                        else "") + f" (limit {limit:g} s)", ""]
        body = tables[name](part)
        lines += (body[2:] if not body[0] else body) + [""]  # no intro line for a part that measured nothing
    return "\n".join(lines)


def write(out: Path, results: dict, tables: dict[str, Callable[[dict], list[str]]]) -> str:
    """Write results.json and results.md into ``out``; return the Markdown."""
    md = markdown(results, tables)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(md)
    return md
