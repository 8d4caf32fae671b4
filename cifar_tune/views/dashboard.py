"""optuna-dashboard served on a storage (``cifar-tune dashboard``): what it shows of each study is written by
``views/study_note.py`` and kept in the artifact store (``storage/artifacts.py``)."""


from __future__ import annotations

import socket

from cifar_tune import progress, runtime
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


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> int:
    """Serve optuna-dashboard (its WSGI app, ``optuna_dashboard.wsgi``) on the storage, with the artifact store,
    until Ctrl-C or SIGTERM, which end it between two requests (never inside one: wsgiref would swallow the
    interrupt there and serve on); returns the exit status, 0. Says one line with the URL (``progress.info``);
    the server itself says nothing per request. Raises ``UserError`` (the storage, a port that is taken or out of
    range)."""
    import optuna_dashboard

    storage = database.storage_for_reading(storage_url)  # a wrong URL or password ends here, in one line
    _check_port(host, port)
    store = artifact_store()
    try:
        server = _quiet_server(host, port, optuna_dashboard.wsgi(storage, artifact_store=store))
    except OSError as e:  # the port was taken between our check and the server's bind
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{host}]" if ":" in host else host
    artifacts = f"artifacts in {artifact_dir()}/" if store is not None else "no artifacts"
    progress.info(f"optuna-dashboard on {database.mask_url(storage_url)} ({artifacts}): "
                  f"http://{shown}:{port}/dashboard/  (Ctrl-C to stop)")
    server.timeout = 0.5  # seconds handle_request waits: how soon a recorded Ctrl-C is seen
    try:
        with server, runtime.stops_on_signals():  # a signal is recorded; the loop ends before the next request
            while runtime.stopping() is None:
                server.handle_request()
    except KeyboardInterrupt:  # raised when the block ends after Ctrl-C (Terminated: SIGTERM)
        pass
    return 0
