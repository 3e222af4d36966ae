"""`lesionlens report SRC OUT`: the paper's ablation grid as one Markdown + HTML report."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from serving.cli import positive_int


def _choices(allowed: dict[str, Any]):
    def parse(text: str) -> list:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
        return [allowed[n] for n in names]

    return parse


def add_cli(subparsers: Any) -> None:
    from lesionlens.report.grid import REPORT_PROFILES

    p = subparsers.add_parser(
        "report",
        help="run the paper's ablation grid (ROI x SMOTE x 2/3 classes, both protocols, "
        "K seeds) and write a Markdown + HTML report",
        description="Ingests SRC (a BUSI folder) once per protocol and class set, runs the "
        "pipeline for every variant in its own process (OUT/runs/<variant>/; finished "
        "variants are reused, so a stopped report resumes), then writes "
        "OUT/report/report.md and report.html with tables, ROC curves, reliability "
        "diagrams, confusion matrices, training curves and a Grad-CAM gallery.",
    )
    p.add_argument("src", help="the BUSI folder (benign/, malignant/, normal/ with masks)")
    p.add_argument("out", help="output folder (records, runs, report)")
    p.add_argument("--profile", choices=sorted(REPORT_PROFILES), default="report-cpu")
    p.add_argument("--seeds", type=positive_int, default=3)
    p.add_argument(
        "--protocols",
        type=_choices({"grouped": "grouped", "paper": "paper"}),
        default=["grouped", "paper"],
    )
    p.add_argument("--classes", type=_choices({"2": 2, "3": 3}), default=[2, 3])
    p.add_argument("--roi", type=_choices({"on": True, "off": False}), default=[True, False])
    p.add_argument("--smote", type=_choices({"on": True, "off": False}), default=[True, False])
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="run nothing: render the report from the planned variants that have finished "
        "(e.g. while another call is still running the grid)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lesionlens.report import grid
    from lesionlens.report.render import render

    t0 = time.time()
    variants = grid.plan(args.protocols, args.classes, args.roi, args.smote, args.seeds)

    def log(line: str) -> None:
        print(f"[report] {line}", flush=True)

    if args.finished_only:
        planned, variants = len(variants), grid.finished(args.out, variants)
        if not variants:
            print(
                f"error: none of the {planned} planned runs has finished under {args.out}/runs",
                file=sys.stderr,
            )
            return 2
        log(f"{len(variants)} of {planned} planned runs have finished; rendering those")
    else:
        log(f"{len(variants)} runs, profile {args.profile}, into {args.out}")
        grid.ingest_all(args.src, args.out, variants, log)
    results = list(grid.run_all(args.out, args.profile, variants, log))
    md, html = render(
        results, args.out, f"LesionLens ablation report ({args.profile})", time.time() - t0
    )
    log(f"wrote {md} and {html}")
    return 0
