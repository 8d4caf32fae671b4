"""The process around the library: which Keras backend, loaded quietly (``backend``), the devices it computes on
and the GPUs each worker gets (``devices``), and Ctrl-C/SIGTERM handled at the next step (``signals``). Below the
engines, which use it; it imports none of them."""

from cifar_tune.runtime.backend import (
    choose_backend,
    import_keras,
    one_training_at_a_time,
    quiet_native_stderr,
    resolve_engine,
)
from cifar_tune.runtime.signals import (
    INTERRUPTED,
    TERMINATED,
    command_line,
    raise_if_stopping,
    signals_deferred,
    stop_callback,
    stop_on_signals,
    stopping,
    stops_on_signals,
)

__all__ = ["INTERRUPTED", "TERMINATED", "choose_backend", "command_line", "import_keras",
           "one_training_at_a_time", "quiet_native_stderr", "raise_if_stopping", "resolve_engine", "signals_deferred",
           "stop_callback",
           "stop_on_signals", "stopping", "stops_on_signals"]
