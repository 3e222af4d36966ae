"""``lesionlens serve-dev`` / ``python -m serving.dev``: the development server's command line.

Why apart from ``serving/cli.py``: the client command ships to users who query production TF
Serving; this one starts a stand-in server for development and tests only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modules import contract as C
from serving.dev.limits import Limits

STOP_TIMEOUT_S = 20.0


def add_cli(subparsers: Any) -> None:
    """Registers ``serve-dev`` on an argparse subparsers object."""
    serve_dev = subparsers.add_parser(
        "serve-dev",
        help="serve a pushed SavedModel locally over TF Serving's gRPC + REST protocols",
        description="A development stand-in for tensorflow_model_server (not for production).",
    )
    add_serve_dev_arguments(serve_dev)
    serve_dev.set_defaults(func=run_serve_dev)


def _version_label(text: str) -> tuple[str, int]:
    label, sep, version = text.partition("=")
    if not sep or not label or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected LABEL=VERSION, got {text!r}")
    return label, int(version)


def add_serve_dev_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``serve-dev`` (also used by ``python -m serving.dev``)."""
    # tensorflow_model_server's flag names are accepted too, so a TF Serving command line
    # (or a docker-compose file) runs against serve-dev unchanged.
    parser.add_argument(
        "--model-dir",
        "--model_base_path",
        dest="model_dir",
        type=Path,
        help="<serving_root>/<model_name> holding version dirs, or one version dir",
    )
    parser.add_argument(
        "--model-name",
        "--model_name",
        dest="model_name",
        help="default: the model dir's name (a version dir's parent's name)",
    )
    parser.add_argument(
        "--model-config-file",
        "--model_config_file",
        dest="model_config_file",
        type=Path,
        help="a TF Serving models.config (ModelServerConfig text proto) naming one model "
        "(name, base_path) instead of --model-dir / --model-name",
    )
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port)")
    parser.add_argument(
        "--rest-port",
        "--rest_api_port",
        dest="rest_port",
        type=int,
        default=8501,
        help="REST port (0 = any free)",
    )
    parser.add_argument("--no-rest", action="store_true", help="serve gRPC only")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument(
        "--file-system-poll-wait-seconds",
        "--file_system_poll_wait_seconds",
        dest="poll_seconds",
        type=float,
        default=1.0,
        help="how often to look for a newly pushed version and load it (<= 0: never)",
    )
    parser.add_argument(
        "--version-label",
        action="append",
        default=[],
        type=_version_label,
        metavar="LABEL=VERSION",
        help="a TF Serving version label, e.g. stable=3",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=Limits.max_in_flight,
        help="predict requests served at once; more get RESOURCE_EXHAUSTED (REST 429) at once",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=Limits.max_batch,
        help="images per request; a larger batch gets INVALID_ARGUMENT",
    )
    parser.add_argument(
        "--audit-log",
        type=Path,
        metavar="PATH",
        help="append one JSON line per predict request (UTC time, request id, model, version, "
        "signature, SHA-256 of each image, class_id, P(malignant), latency, outcome) to PATH; "
        "never pixels, names or paths",
    )
    parser.add_argument(
        "--audit-log-max-mb",
        type=float,
        default=64,
        help="rotate the audit log past this size (PATH.1 ... PATH.N kept)",
    )
    parser.add_argument(
        "--audit-log-backups", type=int, default=10, help="rotated audit logs kept (N)"
    )
    parser.add_argument(
        "--max-request-mb",
        type=int,
        default=Limits.max_request_bytes // 2**20,
        help="request size in MiB; larger gets RESOURCE_EXHAUSTED (gRPC) / 413 (REST)",
    )


def _model_source(args: argparse.Namespace) -> tuple[Path, str | None]:
    """(model dir, model name) from --model-dir / --model-name or a models.config."""
    if args.model_config_file is None:
        if args.model_dir is None:
            raise ValueError("give --model-dir (--model_base_path) or --model_config_file")
        return args.model_dir, args.model_name
    if args.model_dir is not None:
        raise ValueError("give either --model-dir or --model_config_file, not both")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(args.model_config_file.read_text(), config)
    except (OSError, text_format.ParseError) as error:
        raise ValueError(f"{args.model_config_file}: {error}") from None
    models = list(config.model_config_list.config)
    if len(models) != 1:
        raise ValueError(
            f"{args.model_config_file}: serve-dev serves one model; the file names {len(models)}"
        )
    return Path(models[0].base_path), models[0].name or None


def _check_model_dir(model_dir: Path) -> None:
    """A missing model dir is an error before TensorFlow is imported (seconds)."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ValueError(f"model dir {path} does not exist")


def run_serve_dev(args: argparse.Namespace, serve_fn: Callable[..., Any] | None = None) -> int:
    """Starts the dev server, prints its addresses and blocks until Ctrl-C / SIGTERM."""
    import signal
    import threading

    try:
        model_dir, model_name = _model_source(args)
        _check_model_dir(model_dir)
        if serve_fn is None:  # TensorFlow loads here, after the arguments were checked
            from serving.dev.server import serve as serve_fn
        audit_log = None
        if args.audit_log is not None:
            from serving.audit import AuditLog

            audit_log = AuditLog(args.audit_log, args.audit_log_max_mb, args.audit_log_backups)
        server = serve_fn(
            model_dir,
            model_name,
            port=args.port,
            rest_port=None if args.no_rest else args.rest_port,
            host=args.host,
            version_labels=dict(args.version_label),
            limits=Limits(args.max_in_flight, args.max_batch_size, args.max_request_mb * 2**20),
            poll_seconds=args.poll_seconds,
            on_new_version=lambda s: print(
                f"Loaded version {s.version} from {s.path}"
                + (f" (warm-up: {s.warmup_requests} requests)" if s.warmup_requests else ""),
                flush=True,
            ),
            audit_log=audit_log,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM only set the event: no KeyboardInterrupt lands inside a library
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    print(
        f"Serving model '{server.model_name}' version {server.version} "
        f"from {server.store.latest.path}",
        flush=True,
    )
    latest = server.store.latest
    if latest.warmup_requests:
        print(
            f"  warm-up: {latest.warmup_requests} requests from {C.WARMUP_REQUESTS} replayed "
            f"in {latest.warmup_seconds:.1f} s",
            flush=True,
        )
    print(f"  gRPC: {server.grpc_target}", flush=True)
    if server.rest_url:
        print(f"  REST: {server.rest_url}/v1/models/{server.model_name}", flush=True)
    if audit_log is not None:
        print(f"  audit log: {audit_log.path}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        # A bounded, graceful stop: a front end that does not finish must not keep the
        # process alive after Ctrl-C.
        stopper = threading.Thread(target=server.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=STOP_TIMEOUT_S)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if audit_log is not None:
        audit_log.close()
    if stopper.is_alive():
        print(f"Stopped (shutdown unfinished after {STOP_TIMEOUT_S:.0f} s).", flush=True)
        os._exit(0)
    print("Stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.dev``: the same options as ``lesionlens serve-dev``."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.dev",
        description="Serve a pushed SavedModel over TF Serving's gRPC and REST protocols.",
    )
    add_serve_dev_arguments(parser)
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's and CUDA's start-up messages"
    )
    args = parser.parse_args(argv)
    if argv is None and not args.verbose:
        from serving.quiet import quiet_startup

        quiet_startup()
    return run_serve_dev(args)
