"""optuna-dashboard served on a storage (``cifar-tune dashboard``): what it shows of each study is written by
``views/study_note.py`` and kept in the artifact store (``storage/artifacts.py``)."""


from __future__ import annotations

import socket

from cifar_tune import progress
from cifar_tune.errors import UserError
from cifar_tune.storage import database
from cifar_tune.storage.artifacts import artifact_dir, artifact_store


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise UserError(f"--port must be in 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror}; choose another --port") from None


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> int:
    """Serve optuna-dashboard on the storage (with the artifact store) until Ctrl-C; returns the exit status."""
    import optuna_dashboard

    storage = database.storage_for_reading(storage_url)  # a wrong URL or password ends here, in one line
    _check_port(host, port)
    store = artifact_store()
    shown = f"[{host}]" if ":" in host else host
    artifacts = f"artifacts in {artifact_dir()}/" if store is not None else "no artifacts"
    progress.info(f"optuna-dashboard on {database.mask_url(storage_url)} ({artifacts}): "
                  f"http://{shown}:{port}/dashboard/  (Ctrl-C to stop)")
    try:
        optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
    except OSError as e:  # the port was taken between our check and the server's bind
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        pass
    return 0
