"""Where studies live: storage URLs, opening and checking an Optuna RDB storage (``database``), and the
locks that order processes sharing one (``locks``)."""

__all__ = ["database", "locks"]
