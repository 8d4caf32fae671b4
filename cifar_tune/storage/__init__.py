"""Where studies live: storage URLs, opening and checking an Optuna RDB storage (``database``), the locks that
order processes sharing one (``locks``), and the artifact store beside it (``artifacts``)."""

__all__ = ["artifacts", "database", "locks"]
