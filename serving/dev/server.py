"""The development stand-in for tensorflow_model_server, running: `serve()` loads the newest
version under a model dir into a `ModelStore`, starts the gRPC front end (grpc_service.py)
and optionally the REST one (rest.py) on it, both behind one `Admission` (admission.py), and
returns a `DevServer` handle. Every `poll_seconds` the handle looks for a newly pushed
version, loads and warms it up beside the serving one and swaps it in (TF Serving's
file-system polling with the `latest` policy); a version that fails to load is logged and
skipped while the current one keeps serving. `stop()` ends polling and both front ends.

Why: there is no tensorflow_model_server binary or Docker here, yet clients must be developed
and tested against the real protocol, with TF Serving's status codes and error texts, so
client error handling written here holds against production.

Not mimicked: batching, Classify/Regress/MultiInference (UNIMPLEMENTED), a version folder
removed from disk (the loaded version keeps serving), CORS, TF Serving's request logging
(its own audit log instead: `audit_log`, serving/audit.py).

Usage: ``python -m serving.dev --model-dir out/serving/lesionlens`` or
``lesionlens serve-dev ...``; from Python, ``with serve(dir, "name", port=0, rest_port=0) as s:``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc

from serving.audit import AuditLog
from serving.dev import grpc_service, rest
from serving.dev.admission import Admission
from serving.dev.limits import Limits
from serving.dev.model_store import ModelStore, Servable, find_versions

log = logging.getLogger(__name__)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DevServer:
    """A running dev server (gRPC, optionally REST). Use as a context manager or call `stop()`."""

    def __init__(
        self,
        store: ModelStore,
        grpc_server: grpc.Server,
        grpc_port: int,
        http_server: ThreadingHTTPServer | None,
        host: str,
        admission: Admission,
    ) -> None:
        self.store = store
        self.admission = admission  # requests in flight and the limits
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = http_server.server_address[1] if http_server else None
        self._grpc_server = grpc_server
        self._http_server = http_server
        self._http_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        if http_server is not None:
            self._http_thread = threading.Thread(
                target=http_server.serve_forever, name="dev-server-rest", daemon=True
            )
            self._http_thread.start()

    def start_polling(
        self, seconds: float, on_new_version: Callable[[Servable], None] | None = None
    ) -> None:
        """Loads newly pushed versions in a background thread until `stop()`."""

        def poll() -> None:
            failed: set[int] = set()  # versions that did not load: not retried
            while not self._stopped.wait(seconds):
                newest = -1
                try:
                    newest = max(find_versions(self.store.model_dir)[1])
                    if newest in failed:
                        continue
                    servable = self.store.load_newer()
                except Exception as error:
                    failed.add(newest)
                    log.error(
                        "version %d not loaded, still serving %d: %s", newest, self.version, error
                    )
                    continue
                if servable is not None and on_new_version is not None:
                    on_new_version(servable)

        threading.Thread(target=poll, name="dev-server-poll", daemon=True).start()

    @property
    def model_name(self) -> str:
        return self.store.name

    @property
    def version(self) -> int:
        return self.store.latest.version

    @property
    def grpc_target(self) -> str:
        """``host:port`` for `grpc.insecure_channel` / `GrpcClient`."""
        return _address(self.host, self.grpc_port)

    @property
    def rest_url(self) -> str | None:
        """``http://host:port`` for `RestClient`, or None when REST is off."""
        return None if self.rest_port is None else f"http://{_address(self.host, self.rest_port)}"

    def stop(self, grace: float | None = 1.0) -> None:
        """Stops both front ends; in-flight requests get `grace` seconds. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        done = self._grpc_server.stop(grace).wait(timeout=(grace or 0.0) + 10.0)
        if not done:
            log.warning("gRPC server did not stop within %.0f s", (grace or 0.0) + 10.0)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until `stop()` was called (or `timeout` passed); True once stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    model_dir: str | Path,
    model_name: str | None = None,
    port: int = 8500,
    rest_port: int | None = 8501,
    host: str = "127.0.0.1",
    *,
    version_labels: Mapping[str, int] | None = None,
    limits: Limits | None = None,
    poll_seconds: float = 1.0,
    on_new_version: Callable[[Servable], None] | None = None,
    audit_log: AuditLog | None = None,
) -> DevServer:
    """Loads the newest version under `model_dir` and serves it; returns once listening.

    `model_dir` is ``<root>/<name>`` (holding integer version dirs) or one version dir.
    `model_name` defaults to that base dir's name. Port 0 picks a free port (read the actual
    ones from the handle); `rest_port=None` turns REST off. `version_labels` maps TF Serving
    version labels (e.g. ``{"stable": 3}``) to loaded versions. `limits` bounds concurrent
    predict requests and batch sizes (defaults: `Limits()`). Every `poll_seconds` (> 0) the
    model dir is checked for a newer version, which is loaded (and warmed up) beside the
    serving one and then swapped in; `on_new_version` is called with it. A version that fails
    to load is logged and skipped, and the current one keeps serving (TF Serving's rule).
    `audit_log` gets one JSON line per predict request, gRPC and REST (serving/audit.py).
    """
    store = ModelStore.from_dir(model_dir, model_name, version_labels)
    admission = Admission(limits or Limits())
    grpc_server = grpc_service.grpc_server(store, admission, audit_log)
    try:
        bound = grpc_server.add_insecure_port(_address(host, port))
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {_address(host, port)}: {error}") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {_address(host, port)}")
    http_server = None
    if rest_port is not None:
        try:
            http_server = rest.http_server(store, admission, host, rest_port, audit_log)
        except OSError as error:
            grpc_server.stop(None)
            raise OSError(
                f"cannot listen for REST on {_address(host, rest_port)}: {error}"
            ) from None
    grpc_server.start()
    server = DevServer(store, grpc_server, bound, http_server, host, admission)
    if poll_seconds > 0:
        server.start_polling(poll_seconds, on_new_version)
    log.info(
        "serving %s v%d: gRPC %s, REST %s",
        store.name,
        server.version,
        server.grpc_target,
        server.rest_url,
    )
    return server
