"""What the Python API returns: small frozen result objects. Tables are pandas DataFrames, studies
``optuna.Study`` objects, figures plotly figures drawn on demand. Nothing here trains, stores or prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go


def _titled(figures: list[tuple[str, go.Figure]]) -> dict[str, go.Figure]:
    """Figures by their title (each figure also carries it as its layout title)."""
    for title, figure in figures:
        figure.update_layout(title=title)
    return dict(figures)


@dataclass(frozen=True)
class BaselineResult:
    """The seed's fixed-baseline comparison (``cifar_tune.baseline``; the CLI's ``baseline``).

    ``table``: one row per architecture, columns ``Model`` (its label), ``Accuracy``, ``Precision``, ``Recall``,
    ``F1 Score``: scikit-learn's accuracy and macro averages over the ten classes, on the test set (a subset's
    test images with ``subset``), one run each. ``histories``: model label -> Keras history key (``loss``,
    ``accuracy``, ``val_loss``, ``val_accuracy``) -> one value per epoch. ``out``: the folder holding
    ``metrics.csv``, ``metrics.md``, ``history.csv`` and ``report.html``.
    """

    table: pd.DataFrame
    histories: dict[str, dict[str, list[float]]]
    out: Path

    def figures(self) -> dict[str, go.Figure]:
        """Plotly figures by title: the test metrics per model (grouped bars of ``table``) and the learning curves
        (accuracy and loss per epoch, train vs validation, from ``histories``); what ``report.html`` shows."""
        from cifar_tune.views.figures import learning_curves_figure, metric_bars_figure

        return _titled([("Test metrics per model (scikit-learn macro averages)", metric_bars_figure(self.table)),
                        ("Learning curves (train vs validation)", learning_curves_figure(self.histories))])


@dataclass(frozen=True)
class Comparison:
    """Tuned against baseline on the test set (``cifar_tune.compare``; the CLI's ``compare``).

    Each study's best trial and the seed baseline, retrained from scratch on ``seeds`` seeds the study never
    trained with and evaluated once on the test set.

    ``per_seed``: one row per architecture, variant and seed: ``arch``, ``Model``, ``Variant`` (``baseline`` or
    ``tuned``), ``Seed``, ``Accuracy``, ``Precision``, ``Recall``, ``F1 Score`` (scikit-learn macro averages),
    ``Trial`` (the trial whose config was trained), ``Epochs``, ``Seconds`` (training time), ``Model file``,
    ``Engine``. ``table``: per architecture the rows ``baseline``, ``tuned`` and ``tuned - baseline``, columns
    ``arch``, ``Model``, ``Variant``, ``Seeds`` (how many), and per metric the mean, ``<metric> std`` (sample
    standard deviation over the seeds), and on the difference row ``<metric> low`` / ``high`` (95% interval of the
    mean paired per-seed difference, Student's t; NaN with one seed) and ``<metric> p`` (two-sided paired t-test).
    ``records``: what was stored with each study (study name -> the ``compare`` user attribute, plain data incl. the
    per-seed confusion matrices). ``out``: the folder holding ``compare.csv`` and ``compare.md``. ``seconds``: wall
    time of the whole call. ``storage``: the storage URL, password masked.
    """

    per_seed: pd.DataFrame
    table: pd.DataFrame
    out: Path
    records: dict[str, dict]
    seeds: int
    seconds: float
    storage: str

    @property
    def display(self) -> pd.DataFrame:
        """The table as the CLI prints it: ``Model``, ``Variant``, each metric as ``mean ± std`` (the difference
        row with its 95% interval ``[low, high]``), and ``Verdict`` (read from the accuracy interval)."""
        from cifar_tune.views.tables import display_table

        return display_table(self.table)

    def summary(self) -> str:
        """The text the CLI's ``compare`` prints at its end (the table, where files and models went)."""
        from cifar_tune.views.tables import summary

        return summary(self.per_seed, self.table, self.out, seeds=self.seeds, seconds=self.seconds)

    def figures(self) -> dict[str, go.Figure]:
        """Plotly figures by title, as ``cifar-tune report`` draws them: the test metrics of baseline and tuned
        (mean over the seeds, error bars one standard deviation) and the tuned models' confusion matrices (test set,
        summed over the seeds)."""
        from cifar_tune.views.figures import compare_figures

        return _titled(compare_figures(self.records))


@dataclass(frozen=True)
class Studies:
    """A storage's studies and the comparisons stored with them (``cifar_tune.load``), read without writing.

    ``studies``: architecture -> its ``optuna.Study`` (the study named ``cifar10-<arch>``, else the newest of that
    architecture). ``table``: the stored comparisons aggregated as ``Comparison.table`` (empty when none ran).
    ``records``: study name -> the stored ``compare`` record. ``warnings``: studies whose best trial learned
    nothing worth crowning. ``storage``: the URL, password masked.
    """

    storage: str
    studies: dict[str, optuna.Study]
    table: pd.DataFrame
    records: dict[str, dict]
    warnings: tuple[str, ...] = ()

    @property
    def display(self) -> pd.DataFrame:
        """``table`` as the CLI prints it (see ``Comparison.display``); empty when nothing was compared."""
        from cifar_tune.views.tables import display_table

        return display_table(self.table) if not self.table.empty else pd.DataFrame()

    def figures(self) -> dict[str, go.Figure]:
        """The figures of the stored comparisons (see ``Comparison.figures``); none when nothing was compared."""
        from cifar_tune.views.figures import compare_figures

        return _titled(compare_figures(self.records)) if self.records else {}


@dataclass(frozen=True)
class JobResult:
    """The whole job (``cifar_tune.run``; the CLI's ``run``): a study per architecture, compare, report.

    ``studies``: architecture -> its ``optuna.Study``. ``table``: the comparisons stored with the studies,
    aggregated (see ``Comparison.table``; this run's and earlier ones still up to date). ``comparison``: what
    compare retrained in this call (None when every comparison was up to date). ``report``: the study report's
    HTML file. ``not_compared``: architecture -> why it has no comparison (no completed trial; the CLI then exits
    with status 1). ``warnings``: studies whose best trial learned nothing worth crowning. ``seconds``: wall time.
    """

    studies: dict[str, optuna.Study]
    table: pd.DataFrame
    report: Path
    comparison: Comparison | None = None
    not_compared: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def display(self) -> pd.DataFrame:
        """``table`` as the CLI prints it (see ``Comparison.display``); empty when nothing was compared."""
        from cifar_tune.views.tables import display_table

        return display_table(self.table) if not self.table.empty else pd.DataFrame()
