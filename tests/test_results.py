"""The committed real-budget results (results/<machine-date>/): the database opens from a fresh clone, and the
tables its README quotes are what the database holds (so the README cannot drift from the data)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cifar_tune import cli
from cifar_tune.storage import database
from cifar_tune.views import tables
from tests.helpers.pg import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = sorted((REPO / "results").glob("*/studies.db"))
VERDICT = "## The real result"  # the top-level README's section that quotes compare's results


def quoted_rows(readme: Path) -> dict[str, list[str]]:
    """The rows of the README's "Where it stands" table, by study name."""
    text = readme.read_text()
    section = text[text.index("## Where it stands"):]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| cifar10-")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.parametrize("db", RESULTS, ids=lambda p: p.parent.name)
def test_the_readme_quotes_what_the_committed_database_holds(db):
    storage = database.storage_for_reading(f"sqlite:///{db}")
    stored = {r["study"]: r for r in tables.study_rows(storage)}
    quoted = quoted_rows(db.parent / "README.md")
    assert quoted and set(quoted) == set(stored)
    for name, cells in quoted.items():
        r = stored[name]
        assert cells[:5] == [str(r[k]) for k in ("trials", "complete", "pruned", "fail", "running")], name
        assert cells[5:7] == [f"{r['best_val_loss']:.4f}", f"{r['best_val_acc']:.4f}"], name


def test_results_are_committed():
    assert RESULTS, "no results/<folder>/studies.db"


def verdict_rows(readme: Path) -> tuple[str, dict[str, list[str]]]:
    """The results folder the README's verdict section names, and its table's rows by architecture key."""
    text = readme.read_text()
    section = text[text.index(VERDICT):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    folder = re.search(r"results/([\w.-]+)/studies\.db", section).group(1)
    rows = [line.strip("|").split("|") for line in section.splitlines() if re.match(r"^\| `\w+` \|", line)]
    return folder, {cells[0].strip(" `"): [c.strip() for c in cells[1:]] for cells in rows}


def test_the_top_readme_verdict_quotes_the_stored_compare_results():
    """Every row of the verdict table is compare's record in the committed database, and every stored compare
    result is in the table: baseline and tuned test accuracy (mean ± std), the paired difference with its 95%
    interval, the verdict, seeds and epochs."""
    folder, quoted = verdict_rows(REPO / "README.md")
    db = REPO / "results" / folder / "studies.db"
    stored = {r["arch"]: r for r in tables.compared_rows(database.storage_for_reading(f"sqlite:///{db}"))}
    assert quoted and set(quoted) == set(stored)
    for arch, cells in quoted.items():
        r = stored[arch]
        # after the arch: seed notebook | budget | seeds | baseline | tuned | difference [95% interval] | verdict
        assert cells[1] == f"{r['epochs']} epochs, {r['train_images']:,} images", arch
        assert cells[2] == str(r["seeds"]), arch
        assert cells[3] == f"{r['baseline_acc']:.4f} ± {r['baseline_std']:.4f}", arch
        assert cells[4] == f"{r['tuned_acc']:.4f} ± {r['tuned_std']:.4f} (#{r['best_trial']})", arch
        assert cells[5] == f"{r['difference']:+.4f} [{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]", arch
        assert cells[6] == r["verdict"], arch


@pytest.mark.parametrize("db", RESULTS, ids=lambda p: p.parent.name)
def test_report_and_dashboard_open_the_committed_database(db, tmp_path):
    """What the results README promises a fresh clone: `report` writes the HTML report of every stored study, and
    `dashboard` serves them (on a copy: the committed file stays untouched)."""
    copy = tmp_path / "studies.db"
    shutil.copyfile(db, copy)
    url = f"sqlite:///{copy}"
    names = {r["study"] for r in tables.study_rows(database.storage_for_reading(url))}
    assert cli.main(["report", "--storage", url, "--out", str(tmp_path / "report.html")]) == 0
    html = (tmp_path / "report.html").read_text()
    assert names and all(name in html for name in names)

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cifar_tune", "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "CIFAR_TUNE_ARTIFACTS": str(db.parent / "artifacts")})
    try:
        deadline, served = time.time() + 90, None
        while served is None and time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    served = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert served is not None, proc.stderr.read() if proc.poll() is not None else "not serving after 90 s"
        assert {s["study_name"] for s in served["study_summaries"]} == names
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
