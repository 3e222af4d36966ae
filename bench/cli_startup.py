"""How fast the command line answers when no model runs: `--help` and an argument error.

Why: a user's first contact is `lesionlens --help` or a mistyped path; importing TensorFlow
(seconds) before argparse has even looked at the arguments makes every such answer slow.
Each case runs in a fresh process, the cases interleaved, and the median wall time of
`--repeats` runs is printed, with whether TensorFlow got imported (`-X importtime` is not
needed: the child reports ``"tensorflow" in sys.modules`` itself).

Usage (from the repository root):

  .venv/bin/python -m bench.cli_startup [--repeats 5] [--json OUT.json]

Not a test: a timing depends on the machine and its load; the report prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

# Runs the real entry point, then says whether TensorFlow was imported (on stderr's last line).
CHILD = r"""
import sys
argv = sys.argv[1:]
code = 0
try:
    if argv[0] == "serve.dev":
        from serving.dev.cli import main
        code = main(argv[1:])
    else:
        from lesionlens.cli import main
        code = main(argv)
except SystemExit as e:
    code = e.code
sys.stderr.write("\nTF_IMPORTED=%d\n" % ("tensorflow" in sys.modules))
sys.exit(code or 0)
"""

CASES: dict[str, list[str]] = {
    "lesionlens --help": ["--help"],
    "lesionlens score --help": ["score", "--help"],
    "lesionlens predict --help": ["predict", "--help"],
    "lesionlens serve-dev --help": ["serve-dev", "--help"],
    "lesionlens ingest --help": ["ingest", "--help"],
    "python -m serving.dev --help": ["serve.dev", "--help"],
    "lesionlens score (missing model)": [
        "score",
        "/nonexistent/model",
        "/nonexistent/src",
        "/tmp/x",
    ],
    "lesionlens score (no arguments)": ["score"],
}


def time_case(argv: Sequence[str]) -> tuple[float, bool, int]:
    """(wall seconds, TensorFlow imported, exit code) of one fresh process."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - t0
    return seconds, "TF_IMPORTED=1" in proc.stderr, proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    imported: dict[str, bool] = {}
    codes: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, case in CASES.items():  # interleaved: load hits every case alike
            seconds, tf_imported, code = time_case(case)
            times[name].append(seconds)
            imported[name], codes[name] = tf_imported, code
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.repeats} runs")
    print(f"{'command':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}  TF imported  exit")
    results = {}
    for name, values in times.items():
        med = statistics.median(values)
        results[name] = {"median_s": med, "runs_s": values, "tensorflow": imported[name]}
        print(
            f"{name:40s} {med:9.2f} {min(values):7.2f} {max(values):7.2f}  "
            f"{'yes' if imported[name] else 'no':11s}  {codes[name]}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
