"""Where studies live: a command's one storage (``handle``: resolved once, opened once), storage URLs, opening and
checking an Optuna RDB storage (``database``), the locks that order processes sharing one (``locks``), and the
artifact store beside it (``artifacts``)."""

__all__ = ["artifacts", "database", "handle", "locks"]
