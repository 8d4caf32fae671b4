"""optuna-dashboard served on a storage (``cifar-tune dashboard``): what it shows of each study is rendered by
``views/dashboard_content.py``, written by the tuning loop and compare, and kept in the artifact store
(``storage/artifacts.py``)."""


from __future__ import annotations

import socket

from cifar_tune import progress, runtime
from cifar_tune.choices import ARTIFACTS_ENV
from cifar_tune.errors import UserError
from cifar_tune.storage import database, handle
from cifar_tune.storage.artifacts import WholeFileArtifactStore, artifact_dir


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


def _artifacts_beside(storage_url: str):
    """The ``artifacts/`` folder beside a SQLite file, when ``$CIFAR_TUNE_ARTIFACTS`` is not set and the folder
    exists (a results folder copied or committed whole, ``results/cpu-2core-2026-11-29/``, keeps its learning
    curves there; for the default storage it is ``storage/artifacts``, the default anyway); else None."""
    import os

    if os.environ.get(ARTIFACTS_ENV):
        return None
    path = database.sqlite_path(storage_url)
    beside = path.parent / "artifacts" if path is not None else None  # its ~ was expanded (normalize_url)
    return beside if beside is not None and beside.is_dir() else None


def _quiet_server(host: str, port: int, app):
    """The WSGI server optuna-dashboard's ``run_server`` uses (wsgiref, through Bottle), without what it prints:
    Bottle's banner and an access-log line per request would bury the one line ``serve`` says."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code="-", size="-") -> None:  # errors are still logged (log_error)
            pass

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return make_server(host, port, app, server_class=Server, handler_class=QuietHandler)


def serve(storage: handle.Storage | str, host: str = "127.0.0.1", port: int = 8080) -> int:
    """Serve optuna-dashboard (its WSGI app, ``optuna_dashboard.wsgi``) on the storage, with the artifact store,
    until the first Ctrl-C or SIGTERM, even one that comes while a response is in flight; returns the exit status,
    0. Says one line with the URL (``progress.info``); the server itself says nothing per request. A read-only
    SQLite URL (``?mode=ro``) is served read-only: the dashboard shows everything, and its edits (notes, deleting)
    fail. ``storage``: the command's (``handle.Storage``) or a URL. Raises ``UserError`` (the storage, a port
    that is taken or out of range)."""
    import optuna_dashboard

    storage = handle.resolve(storage)
    opened = storage.reading()  # a wrong URL or password ends here, in one line
    _check_port(host, port)
    beside = _artifacts_beside(storage.url)
    store = WholeFileArtifactStore(beside) if beside is not None else storage.artifacts
    try:
        server = _quiet_server(host, port, optuna_dashboard.wsgi(opened, artifact_store=store))
    except OSError as e:  # the port was taken between our check and the server's bind
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{host}]" if ":" in host else host
    artifacts = f"artifacts in {beside or artifact_dir()}/" if store is not None else "no artifacts"
    read_only = ", read-only: its edits fail" if database.read_only(storage.url) else ""
    progress.info(f"optuna-dashboard on {storage.shown} ({artifacts}{read_only}): "
                  f"http://{shown}:{port}/dashboard/  (Ctrl-C to stop)")
    _serve_until_stopped(server)
    return 0


SHUTDOWN_WAIT = 2.0  # seconds the server may take to finish a response in flight after Ctrl-C


def _serve_until_stopped(server) -> None:
    """Serve in a daemon thread until Ctrl-C or SIGTERM reaches the main thread, which only waits. Served in the
    main thread, a Ctrl-C that lands while a response is computed is caught by wsgiref's handler (a bare
    ``except``), logged as an error of that request, and the server serves on; here the first one always stops
    it: a response still in flight gets ``SHUTDOWN_WAIT`` seconds, then the process ends (the thread is a daemon)."""
    import threading

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="optuna-dashboard",
                              daemon=True)
    try:
        with runtime.stops_on_signals():  # a signal is recorded; the loop sees it within 0.5 s; leaving raises it
            thread.start()
            while thread.is_alive() and runtime.stopping() is None:
                thread.join(0.5)
            stopper = threading.Thread(target=server.shutdown, daemon=True)
            stopper.start()
            stopper.join(SHUTDOWN_WAIT)
            server.server_close()
    except KeyboardInterrupt:  # Ctrl-C (Terminated: SIGTERM): the server has stopped
        pass
