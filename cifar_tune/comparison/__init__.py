"""The seed's fixed-baseline comparison (``seed_baseline``) and the tuned-vs-baseline retraining on fresh
seeds (``retrain``): which studies, trials, seeds and data it compares (``targets``), its statistics (``statistics``:
the paired t-interval and the verdict) and what it keeps with the study (``persist``: the record and the note
section)."""

__all__ = ["persist", "retrain", "seed_baseline", "statistics", "targets"]
