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
    """Serve optuna-dashboard on the storage (with the artifact store) until the first Ctrl-C, even one that comes
    while a response is in flight; returns the exit status. A read-only SQLite URL (``?mode=ro``) is served
    read-only: the dashboard shows everything, and its edits (notes, deleting) fail."""
    import optuna_dashboard

    storage = database.storage_for_reading(storage_url)  # a wrong URL or password ends here, in one line
    _check_port(host, port)
    store = artifact_store()
    shown = f"[{host}]" if ":" in host else host
    artifacts = f"artifacts in {artifact_dir()}/" if store is not None else "no artifacts"
    read_only = ", read-only: its edits fail" if database.read_only(storage_url) else ""
    progress.info(f"optuna-dashboard on {database.mask_url(storage_url)} ({artifacts}{read_only}): "
                  f"http://{shown}:{port}/dashboard/  (Ctrl-C to stop)")
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        _serve_until_interrupted(app, host, port)
    except OSError as e:  # the port was taken between our check and the server's bind
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return 0


SHUTDOWN_WAIT = 2.0  # seconds the server may take to finish a response in flight after Ctrl-C


def _serve_until_interrupted(app, host: str, port: int) -> None:
    """Serve ``app`` with Bottle's wsgiref server (what ``optuna_dashboard.run_server`` uses) in a daemon thread
    until Ctrl-C in the main thread. Served in the main thread, a Ctrl-C that lands while a response is computed
    is caught by wsgiref's handler (a bare ``except``), logged as an error of that request, and the server
    serves on; here the main thread only waits, so the first Ctrl-C always stops it. Raises the server's
    ``OSError`` (the port was taken)."""
    import threading

    from bottle import WSGIRefServer

    server = WSGIRefServer(host=host, port=port)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            server.run(app)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            failed.append(e)

    thread = threading.Thread(target=run, name="optuna-dashboard", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        srv = getattr(server, "srv", None)
        if srv is not None:  # stop serving; a response still in flight gets SHUTDOWN_WAIT, then the process ends
            stopper = threading.Thread(target=srv.shutdown, daemon=True)
            stopper.start()
            stopper.join(SHUTDOWN_WAIT)
            srv.server_close()
        return
    if failed:
        raise failed[0]
