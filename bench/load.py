"""Load-and-abuse benchmark: does `serve-dev` stay up and keep answering good requests while
hostile clients send bombs, garbage and oversized batches?

It starts the dev server in its own process on loopback (so its memory is measured alone),
then, per concurrency level C, runs C client threads for a fixed time. Each thread sends a
fixed round-robin mix: good `predict_images` requests (test images with their masks) and
hostile ones (PNG and JPEG decompression bombs of 20000 x 20000 pixels, a truncated PNG,
random bytes, a mask of the wrong size, a batch one above the server's limit). A good
request that meets RESOURCE_EXHAUSTED (the server is at its in-flight limit) backs off and
retries, as a production client should; it fails only on any other error or after 30 s.

Reported per level: good requests answered / failed, retries, p50 / p99 latency of good
requests (retries included), good requests per second, hostile requests by status code,
whether the server is alive, and its resident memory (VmRSS after the level, VmHWM peak).
Goals: 0 failed good requests, the server alive, and a peak RSS that does not grow with the
number of hostile requests (the level with 16 clients sends ~4x the hostile requests of the
level with 4).

Usage (from the repository root, with a pushed model, e.g. after `make demo`):

  .venv/bin/python -m bench.load [--model-dir DIR] [--records GLOB] [--levels 1,4,16]
      [--seconds 10] [--max-in-flight 4] [--max-batch-size 32] [--json OUT.json]
"""

from __future__ import annotations

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import io
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bench.serving_latency import load_examples, resolve_model_dir
from modules import contract as C
from serving.client import GrpcClient
from serving.dev.limits import Limits
from serving.errors import ServingError
from tests.bombs import bomb_jpeg, bomb_png

RETRY_FOR_S = 30.0


def good_pairs(model_dir: Path, records: str | None, n: int) -> list[tuple[bytes, bytes]]:
    """(image, mask) of up to n test examples of the model's records (see serving_latency)."""
    import tensorflow as tf

    examples, _ = load_examples(model_dir, records, n)
    pairs = []
    for raw in examples:
        feats = tf.train.Example.FromString(raw).features.feature
        pairs.append((feats[C.IMAGE].bytes_list.value[0], feats[C.MASK].bytes_list.value[0]))
    return pairs


def hostile_requests(good: tuple[bytes, bytes], max_batch: int) -> dict[str, tuple[list, list]]:
    """name -> (images, masks) of one hostile request."""
    image, _ = good
    with Image.open(io.BytesIO(image)) as img:
        wrong = Image.new("L", (img.width + 3, img.height), 255)
    buf = io.BytesIO()
    wrong.save(buf, format="PNG")
    rng = np.random.default_rng(0)
    return {
        "bomb_png": ([bomb_png()], [b""]),
        "bomb_jpeg": ([bomb_jpeg()], [b""]),
        "truncated": ([image[: len(image) // 2]], [b""]),
        "random_bytes": ([rng.bytes(4096)], [b""]),
        "wrong_size_mask": ([image], [buf.getvalue()]),
        "oversized_batch": ([image] * (max_batch + 1), [b""] * (max_batch + 1)),
    }


def start_server(model_dir: Path, limits: Limits) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, "-m", "serving.dev", "--model-dir", str(model_dir), "--no-rest"]
    argv += ["--port", "0", "--max-in-flight", str(limits.max_in_flight)]
    argv += ["--max-batch-size", str(limits.max_batch)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.strip().startswith("gRPC:"):
            return proc, line.split()[-1]
    raise RuntimeError(f"the dev server exited with code {proc.wait()}")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def run_level(
    target: str,
    clients: int,
    seconds: float,
    good: list[tuple[bytes, bytes]],
    hostile: dict[str, tuple[list, list]],
) -> dict:
    """C threads for `seconds`; thread k starts its mix at offset k (good, h1, good, h2, ...)."""
    schedule: list[str] = []
    for name in hostile:
        schedule += ["good", name]
    latencies: list[float] = []
    counts: Counter = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one_good(client: GrpcClient, pair: tuple[bytes, bytes]) -> None:
        t0 = time.monotonic()
        retries = 0
        while True:
            try:
                client.predict_images([pair[0]], [pair[1]])
                outcome = "good_ok"
                break
            except ServingError as error:
                if error.code == "RESOURCE_EXHAUSTED" and time.monotonic() - t0 < RETRY_FOR_S:
                    retries += 1
                    time.sleep(min(0.5, 0.01 * 2**retries))
                    continue
                outcome = f"good_failed:{error.code}"
                break
        with lock:
            counts[outcome] += 1
            counts["good_retries"] += retries
            if outcome == "good_ok":
                latencies.append(time.monotonic() - t0)

    def one_hostile(client: GrpcClient, name: str) -> None:
        images, masks = hostile[name]
        try:
            client.predict_images(images, masks)
            code = "OK"
        except ServingError as error:
            code = error.code or type(error).__name__
        with lock:
            counts[f"{name}:{code}"] += 1

    def worker(k: int) -> None:
        client = GrpcClient(target, "lesionlens", signature=C.PREDICT_IMAGES, timeout_s=60)
        i = k
        while time.monotonic() < stop:
            kind = schedule[i % len(schedule)]
            if kind == "good":
                one_good(client, good[i % len(good)])
            else:
                one_hostile(client, kind)
            i += 1
        client.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = counts.pop("good_ok", 0)
    failed = sum(v for k, v in counts.items() if k.startswith("good_failed"))
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "good_ok": ok,
        "good_failed": failed,
        "good_retries": counts.pop("good_retries", 0),
        "good_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "good_p99_ms": round(float(np.percentile(lat, 99)), 1),
        "good_per_s": round(ok / wall, 2),
        "hostile": dict(sorted((k, v) for k, v in counts.items() if not k.startswith("good"))),
        "good_failures": {k: v for k, v in counts.items() if k.startswith("good_failed")},
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", help="version dir or <serving_root>/<name> (default: found)")
    p.add_argument("--records", help="glob of raw TFRecords for good requests (default: found)")
    p.add_argument("--levels", default="1,4,16", help="concurrent clients per level")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each level")
    p.add_argument("--max-in-flight", type=int, default=Limits.max_in_flight)
    p.add_argument("--max-batch-size", type=int, default=Limits.max_batch)
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, report: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    model_dir = resolve_model_dir(args.model_dir)
    if model_dir is None:
        report("bench.load: no pushed model found; run `make demo` or pass --model-dir")
        return 2
    limits = Limits(args.max_in_flight, args.max_batch_size)
    good = good_pairs(model_dir, args.records, 16)
    hostile = hostile_requests(good[0], limits.max_batch)
    proc, target = start_server(model_dir, limits)
    results = {"model_dir": str(model_dir), "limits": vars(args), "levels": []}
    try:
        warm = GrpcClient(target, "lesionlens", signature=C.PREDICT_IMAGES)
        warm.predict_images([good[0][0]], [good[0][1]])
        idle = memory_mb(proc.pid)
        report(
            f"[load] server pid {proc.pid} at {target}; after warm-up RSS {idle['VmRSS']:.0f} MB"
        )
        results["idle_rss_mb"] = idle["VmRSS"]
        for clients in (int(x) for x in args.levels.split(",")):
            level = run_level(target, clients, args.seconds, good, hostile)
            alive = proc.poll() is None
            level["server_alive"] = alive
            if alive:
                warm.predict_images([good[0][0]], [good[0][1]])  # still answering
                level.update({f"server_{k}_mb": round(v) for k, v in memory_mb(proc.pid).items()})
            hostile_n = sum(level["hostile"].values())
            report(
                f"[load] C={clients:>2}: good {level['good_ok']} ok / {level['good_failed']} "
                f"failed ({level['good_retries']} retries), p50 {level['good_p50_ms']} ms, "
                f"p99 {level['good_p99_ms']} ms, {level['good_per_s']} good/s; "
                f"hostile {hostile_n}; alive {alive}; RSS {level.get('server_VmRSS_mb')} MB, "
                f"peak {level.get('server_VmHWM_mb')} MB"
            )
            report(f"[load]        hostile by status: {level['hostile']}")
            results["levels"].append(level)
            if not alive:
                break
        warm.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    levels = results["levels"]
    goals = {
        "zero_failed_good": all(lv["good_failed"] == 0 for lv in levels),
        "server_alive": all(lv["server_alive"] for lv in levels),
    }
    if len(levels) >= 2 and all(lv["server_alive"] for lv in levels):
        first, last = levels[-2], levels[-1]
        goals["peak_rss_flat"] = last["server_VmHWM_mb"] <= first["server_VmHWM_mb"] * 1.1 + 64
    results["goals"] = goals
    report(f"[load] goals: {goals}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
