"""The `lesionlens` command: one entry point, one subcommand per job."""

from __future__ import annotations

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from lesionlens import synth
    from lesionlens.ingest import cli as ingest_cli
    from lesionlens.report import cli as report_cli
    from lesionlens.reproduce import cli as reproduce_cli
    from lesionlens.score import cli as score_cli
    from serving import cli as predict_cli
    from serving.dev import cli as serve_dev_cli

    parser = argparse.ArgumentParser(
        prog="lesionlens", description="Explainable breast-lesion classification (TFX)."
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's, CUDA's and Beam's start-up messages, hidden by default "
        "(also accepted after the command; or LESIONLENS_VERBOSE=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    synth.add_cli(sub)
    ingest_cli.add_cli(sub)
    predict_cli.add_cli(sub)
    score_cli.add_cli(sub)
    report_cli.add_cli(sub)
    reproduce_cli.add_cli(sub)
    serve_dev_cli.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; `argv` given (tests, Python callers): stderr is left as it is."""
    from pipeline.console import log_to_console

    command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or os.environ.get("LESIONLENS_VERBOSE") == "1"
    argv = [a for a in argv if a != "--verbose"]
    if command_line and not verbose:
        from serving.quiet import quiet_startup

        quiet_startup()
    log_to_console()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "accepts_extra", False):
        return args.func(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
