"""The committed real-budget results (results/<machine-date>/): the database opens from a fresh clone, and the
tables its README quotes are what the database holds (so the README cannot drift from the data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifar_tune import database, records

RESULTS = sorted((Path(__file__).resolve().parents[1] / "results").glob("*/studies.db"))


def quoted_rows(readme: Path) -> dict[str, list[str]]:
    """The rows of the README's "Where it stands" table, by study name."""
    text = readme.read_text()
    section = text[text.index("## Where it stands"):]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| cifar10-")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.parametrize("db", RESULTS, ids=lambda p: p.parent.name)
def test_the_readme_quotes_what_the_committed_database_holds(db):
    storage = database.storage_for_reading(f"sqlite:///{db}")
    stored = {r["study"]: r for r in records.study_rows(storage)}
    quoted = quoted_rows(db.parent / "README.md")
    assert quoted and set(quoted) == set(stored)
    for name, cells in quoted.items():
        r = stored[name]
        assert cells[:5] == [str(r[k]) for k in ("trials", "complete", "pruned", "fail", "running")], name
        assert cells[5:7] == [f"{r['best_val_loss']:.4f}", f"{r['best_val_acc']:.4f}"], name


def test_results_are_committed():
    assert RESULTS, "no results/<folder>/studies.db"
