"""The seed's fixed-baseline comparison (``seed_baseline``) and the tuned-vs-baseline retraining on fresh
seeds (``retrain``): which studies, trials, seeds and data it compares (``targets``) and its stored record
(``record``)."""

__all__ = ["record", "retrain", "seed_baseline", "targets"]
