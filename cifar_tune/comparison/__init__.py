"""The seed's fixed-baseline comparison (``seed_baseline``) and the tuned-vs-baseline retraining on fresh
seeds (``retrain``), with its stored record (``record``)."""

__all__ = ["record", "retrain", "seed_baseline"]
