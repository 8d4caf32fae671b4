"""Optuna's own logging, quieted: our one event per trial replaces its INFO lines (``quiet_optuna``)."""

from __future__ import annotations

import logging

import optuna


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback; for Ctrl-C / SIGTERM our one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info = None
        return True


def quiet_optuna() -> None:
    """Our one event per trial replaces Optuna's INFO lines; interruptions lose their traceback."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").addFilter(_NoInterruptTraceback())
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_NoInterruptTraceback())
