"""Serving benchmark: where a LesionLens prediction spends its time, measured in one run.

Why: the design brief claims Grad-CAM adds only a few percent to a forward pass and that
parsing/decoding/resizing is where serving time goes. This script checks both on a pushed
model, comparing in the same process and run (round-robin interleaved, so background load
hits every variant alike):

  (a) keras   bare Keras forward pass on already-transformed float32 images
  (b) predict `predict_only` signature on serialized raw tf.Examples (parse + Transform + model)
  (c) default `serving_default` signature (b + Grad-CAM)
  (d) grpc    full gRPC round trip (client proto building + dev server + serving_default)
  (e) no mask `serving_default` on the same examples without their masks: the deployable
              path (segmenter + ROI + classifier + Grad-CAM), against (b) with a given mask

Usage (from the repository root; TF_USE_LEGACY_KERAS=1 is set here if unset):

  .venv/bin/python -m bench.serving_latency [--model-dir DIR] [--batch-sizes 1,16] [--iters N]
      [--warmup K] [--records GLOB] [--json OUT.json]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

REPO_ROOT = Path.cwd()  # run from the repository root: out/ and demo_data/ live there

import argparse
import glob
import io
import json
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from modules import contract as C
from modules import image_io
from modules.raw_examples import build_raw_example, without_mask
from modules.transform import decode_images
from serving.dev.server import serve
from serving.versions import newest_version

DEFAULT_MODEL_BASES = (
    REPO_ROOT / "out" / "busi-paper" / "serving" / "lesionlens",
    REPO_ROOT / "out" / "serving" / "lesionlens",
)
DEMO_RECORDS = REPO_ROOT / "demo_data" / "records" / "test"
BUSI_RECORDS = REPO_ROOT / "out" / "busi-paper" / "records" / "test"
GOAL_GRADCAM_OVERHEAD = 1.05  # c/b
GOAL_TRANSFORM_OVERHEAD = 1.2  # b/a
GOAL_GRADCAM_BYTES = 1024  # gradcam tensor bytes per image in the gRPC response
GOAL_NO_MASK_OVERHEAD = 1.5  # e/b: the deployable path against predict_only with a mask
GOAL_NO_MASK_RESPONSE_BYTES = 2048  # per image, every output of the deployable path
MAX_DISTINCT_BATCHES = 4
VARIANTS = ("a", "b", "c", "d", "e")
LABELS = {
    "a": "(a) keras forward",
    "b": "(b) predict_only",
    "c": "(c) serving_default",
    "d": "(d) gRPC round trip",
    "e": "(e) no mask, deployable",
}


# --------------------------------------------------------------------------- inputs


def _highest_version(base: Path) -> Path | None:
    found = newest_version(base)
    return Path(found) if found else None


def resolve_model_dir(arg: str | None) -> Path | None:
    """A version dir from --model-dir (version dir or <root>/<name>), else the defaults."""
    if arg:
        path = Path(arg).expanduser().resolve()
        return path if (path / "saved_model.pb").is_file() else _highest_version(path)
    for base in DEFAULT_MODEL_BASES:
        if found := _highest_version(base):
            return found
    return None


def record_files(model_dir: Path, pattern: str | None) -> list[str]:
    """Test records that fit the model: its profile's own (<output_root>/records/test, as
    model_dir is <output_root>/serving/<name>/<version>; the demo profile's are in
    demo_data/), else real BUSI ingested here, else the demo's generated ones."""
    if pattern:
        return sorted(glob.glob(pattern))
    output_root = model_dir.parents[2] if len(model_dir.parents) > 2 else model_dir
    dirs = [output_root / "records" / "test"]
    if output_root == REPO_ROOT / "out":
        dirs.append(DEMO_RECORDS)
    for d in [*dirs, BUSI_RECORDS, DEMO_RECORDS]:
        files = sorted(glob.glob(str(d / "*.tfrecord*")))
        if files:
            return files
    return []


def _synthetic_examples(n: int) -> list[bytes]:
    """Fallback: BUSI look-alikes from lesionlens.synth (~BUSI resolution), as raw Examples."""
    from lesionlens import synth

    examples = []
    with tempfile.TemporaryDirectory() as tmp:
        synth.generate(tmp, "busi", n=max(1, n // 3 + 1), size=560, seed=0)
        images = sorted(p for p in Path(tmp).glob("*/*.png") if not image_io.mask_stem(p.name))
        for i, path in enumerate(images[:n]):
            masks = image_io.sibling_masks(str(path))
            mask = image_io.mask_feature(masks, None)
            examples.append(
                build_raw_example(
                    path.read_bytes(),
                    mask,
                    label=C.LABELS[path.parent.name],
                    modality=C.LAYOUT_MODALITY["busi"],
                    dataset=C.SYNTHETIC_DATASET,
                    image_id=f"synthetic/{i}",
                )
            )
    return examples


def load_examples(model_dir: Path, pattern: str | None, n: int) -> tuple[list[bytes], str]:
    """Up to `n` serialized raw tf.Examples (ingested test records if any) and their source."""
    files = record_files(model_dir, pattern)
    if files:
        compression = "GZIP" if files[0].endswith(".gz") else ""
        ds = tf.data.TFRecordDataset(files, compression_type=compression).take(n)
        examples = [bytes(x) for x in ds.as_numpy_iterator()]
        if examples:
            return examples, ", ".join(_rel(f) for f in files)
    return _synthetic_examples(n), "lesionlens.synth busi (560 px, generated)"


def describe_examples(examples: Sequence[bytes]) -> str:
    """Mean example size and source-image resolution: decode cost depends on both."""
    from PIL import Image

    sizes, masks = [], 0
    for raw in examples:
        feats = tf.train.Example.FromString(raw).features.feature
        with Image.open(io.BytesIO(feats["image"].bytes_list.value[0])) as img:
            sizes.append((img.width, img.height, img.format))
        masks += bool(feats["mask"].bytes_list.value and feats["mask"].bytes_list.value[0])
    w = np.mean([s[0] for s in sizes])
    h = np.mean([s[1] for s in sizes])
    fmts = "/".join(sorted({str(s[2]) for s in sizes}))
    kb = np.mean([len(x) for x in examples]) / 1024
    return (
        f"{len(examples)} examples, mean {kb:.1f} KB, images ~{w:.0f}x{h:.0f} {fmts}, "
        f"{masks} with a lesion mask"
    )


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- variants


@dataclass
class Batches:
    """The distinct batches of one batch size; iteration i uses batch i % len(examples)."""

    size: int
    examples: list[np.ndarray]  # [B] object arrays of serialized raw Examples
    images: list[tf.Tensor]  # [B, S, S, 3] float32, the transformed images of the same batch
    bare: list[np.ndarray]  # the same Examples without their masks


def make_batches(
    pool: Sequence[bytes], batch_size: int, transform: Callable[..., Any], image_size: int
) -> Batches:
    """Slices the pool (cycling) into batches; transforms each once for the Keras variant."""
    n = max(1, min(MAX_DISTINCT_BATCHES, -(-len(pool) // batch_size)))
    examples, images, bare = [], [], []
    for k in range(n):
        batch = [pool[(k * batch_size + j) % len(pool)] for j in range(batch_size)]
        arr = np.array(batch, dtype=object)
        examples.append(arr)
        bare.append(np.array([without_mask(r) for r in batch], dtype=object))
        transformed = transform(examples=tf.constant(arr))
        images.append(decode_images(transformed["image"], image_size))
    return Batches(batch_size, examples, images, bare)


def response_bytes(outputs: dict[str, tf.Tensor]) -> int:
    """Wire size of a PredictResponse holding these outputs (what TF Serving would send)."""
    response = predict_pb2.PredictResponse()
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response.ByteSize()


@dataclass
class GrpcProbe:
    """Raw PredictionService stub, so the response's wire size can be read."""

    target: str
    model: str
    channel: Any = None
    stub: Any = None
    response_bytes: dict[int, int] = field(default_factory=dict)
    gradcam_bytes: dict[int, int] = field(default_factory=dict)
    request_bytes: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(
            self.target,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def predict(self, examples: np.ndarray) -> dict[str, np.ndarray]:
        """What a client does per request: build the proto, call, decode the outputs."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = C.SERVING_DEFAULT
        request.inputs[C.EXAMPLES].CopyFrom(tf.make_tensor_proto(examples))
        response = self.stub.Predict(request, timeout=300)
        batch = len(examples)
        if batch not in self.response_bytes:
            self.request_bytes[batch] = request.ByteSize()
            self.response_bytes[batch] = response.ByteSize()
            self.gradcam_bytes[batch] = response.outputs[C.GRADCAM].ByteSize()
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def build_variants(
    keras_fn: Callable[[tf.Tensor], tf.Tensor],
    signatures: Any,
    probe: GrpcProbe,
) -> dict[str, Callable[[Batches, int], np.ndarray]]:
    """Each variant runs batch k and returns its probabilities as numpy (forces the result)."""
    predict_only = signatures[C.PREDICT_ONLY]
    default = signatures[C.SERVING_DEFAULT]

    def run_a(b: Batches, k: int) -> np.ndarray:
        return keras_fn(b.images[k]).numpy()

    def run_b(b: Batches, k: int) -> np.ndarray:
        out = predict_only(examples=tf.constant(b.examples[k]))
        return out[C.PROBABILITIES].numpy()

    def run_c(b: Batches, k: int) -> np.ndarray:
        out = default(examples=tf.constant(b.examples[k]))
        out[C.GRADCAM].numpy()
        return out[C.PROBABILITIES].numpy()

    def run_d(b: Batches, k: int) -> np.ndarray:
        return probe.predict(b.examples[k])[C.PROBABILITIES]

    def run_e(b: Batches, k: int) -> np.ndarray:
        out = default(examples=tf.constant(b.bare[k]))
        out[C.GRADCAM].numpy()
        return out[C.PROBABILITIES].numpy()

    return {"a": run_a, "b": run_b, "c": run_c, "d": run_d, "e": run_e}


# --------------------------------------------------------------------------- measuring


def measure(
    variants: dict[str, Callable[[Batches, int], np.ndarray]],
    batches: Batches,
    iters: int,
    warmup: int,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Warm each variant, then time `iters` rounds; each round runs every variant once on the
    same batch, in an order rotated per round (no variant always goes first).
    Returns seconds per request per variant and max |prob diff| against (a) on batch 0."""
    first: dict[str, np.ndarray] = {}
    for name, fn in variants.items():
        first[name] = fn(batches, 0)
        for i in range(1, warmup):
            fn(batches, i % len(batches.examples))
    # (e) sees another ROI (the segmenter's), so its probabilities differ by design
    diffs = {n: float(np.max(np.abs(first[n] - first["a"]))) for n in variants if n != "e"}
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(iters):
        k = i % len(batches.examples)
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            variants[name](batches, k)
            times[name].append(time.perf_counter() - t0)
    return times, diffs


def summarize(times: dict[str, list[float]], batch: int) -> dict[str, Any]:
    """p50/p95 per request and per image, throughput, and paired ratios (median of the
    per-round ratios: rounds are interleaved, so load drift cancels within a round)."""
    stats: dict[str, Any] = {}
    for name, ts in times.items():
        t = np.asarray(ts)
        stats[name] = {
            "p50_ms_req": float(np.percentile(t, 50) * 1e3),
            "p95_ms_req": float(np.percentile(t, 95) * 1e3),
            "p50_ms_img": float(np.percentile(t, 50) * 1e3 / batch),
            "p95_ms_img": float(np.percentile(t, 95) * 1e3 / batch),
            "img_per_s": float(batch * len(t) / t.sum()),
        }

    def ratio(x: str, y: str) -> float:
        return float(np.median(np.asarray(times[x]) / np.asarray(times[y])))

    ratios = {"c/b": ratio("c", "b"), "b/a": ratio("b", "a"), "c/a": ratio("c", "a")}
    ratios["d/c"] = ratio("d", "c")
    ratios["e/b"] = ratio("e", "b")
    return {"variants": stats, "ratios": ratios}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu,
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "python": platform.python_version(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "loadavg_start": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model-dir",
        help="pushed model: a version dir or <serving_root>/<name> (highest version). Default: "
        "out/busi-paper/serving/lesionlens, else out/serving/lesionlens",
    )
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated (default 1,16)")
    p.add_argument("--iters", type=int, default=30, help="timed rounds per batch size")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per variant and size")
    p.add_argument("--records", help="glob of raw tf.Example TFRecords (default: model's test)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    try:
        args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    except ValueError:
        p.error(f"--batch-sizes must be integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.iters < 1 or args.warmup < 0:
        p.error("batch sizes and --iters must be >= 1, --warmup >= 0")
    return args


def print_report(result: dict[str, Any]) -> None:
    m, model = result["machine"], result["model"]
    print("\nLesionLens serving benchmark")
    print(f"model    {model['dir']}")
    print(f"         image_size {model['image_size']}, classes {'/'.join(model['classes'])}")
    print(f"inputs   {result['inputs']['description']}")
    print(f"         from {result['inputs']['source']}")
    print(
        f"machine  {m['cpus']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']}; "
        f"TF {m['tensorflow']}, tf_keras {m['tf_keras']}, Python {m['python']}"
        + (f"; GPUs {m['gpus']}" if m["gpus"] else "; CPU only")
    )
    print(f"         load average {m['loadavg_start']:.2f} at start, {m['loadavg_end']:.2f} at end")
    print(
        f"timing   {result['iters']} rounds per batch size after {result['warmup']} warm-up "
        "calls; variants interleaved round-robin"
    )
    head = f"\n{'variant':<22}{'batch':>6}{'p50 ms/req':>12}{'p50 ms/img':>12}"
    head += f"{'p95 ms/img':>12}{'img/s':>9}"
    print(head)
    print("-" * (len(head) - 1))
    for run in result["runs"]:
        for v in VARIANTS:
            s = run["variants"][v]
            print(
                f"{LABELS[v]:<22}{run['batch']:>6}{s['p50_ms_req']:>12.2f}{s['p50_ms_img']:>12.2f}"
                f"{s['p95_ms_img']:>12.2f}{s['img_per_s']:>9.1f}"
            )
    print("\nratios (median of per-round ratios)")
    for run in result["runs"]:
        r, ok = run["ratios"], run["pass"]
        print(
            f"  batch {run['batch']:>3}: c/b {r['c/b']:.3f} {_verdict(ok['c/b'])} "
            f"(Grad-CAM overhead, goal <= {GOAL_GRADCAM_OVERHEAD})\n"
            f"             b/a {r['b/a']:.3f} {_verdict(ok['b/a'])} "
            f"(parse + Transform overhead, goal <= {GOAL_TRANSFORM_OVERHEAD})\n"
            f"             c/a {r['c/a']:.3f}      (whole signature vs bare forward)\n"
            f"             d/c {r['d/c']:.3f}      (gRPC transport + client proto work)\n"
            f"             e/b {r['e/b']:.3f} {_verdict(ok['e/b'])} (no mask: segmenter + "
            f"Grad-CAM vs predict_only with a mask, goal <= {GOAL_NO_MASK_OVERHEAD})"
        )
    print("\ngRPC bytes per image (serving_default)")
    for run in result["runs"]:
        g = run["grpc_bytes_per_image"]
        print(
            f"  batch {run['batch']:>3}: request {g['request']:.0f}, response {g['response']:.0f}"
            f", gradcam {g['gradcam']:.0f} {_verdict(run['pass']['gradcam_bytes'])} "
            f"(goal <= {GOAL_GRADCAM_BYTES}; map {'x'.join(map(str, model['gradcam_shape']))})"
        )
    print("\nresponse bytes per image, deployable path (e): every output")
    for run in result["runs"]:
        e = run["no_mask_response_bytes_per_image"]
        print(
            f"  batch {run['batch']:>3}: {e:.0f} {_verdict(run['pass']['no_mask_bytes'])} "
            f"(goal <= {GOAL_NO_MASK_RESPONSE_BYTES}); roi_source {run['roi_sources']}"
        )
    worst = max(
        max(abs(d) for d in run["max_abs_prob_diff_vs_a"].values()) for run in result["runs"]
    )
    print(f"\nconsistency: max |probability difference| of b, c, d against a: {worst:.2e}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = resolve_model_dir(args.model_dir)
    if model_dir is None:
        where = args.model_dir or " or ".join(_rel(b) for b in DEFAULT_MODEL_BASES)
        print(
            "bench.serving_latency: no pushed model (<name>/<version>/saved_model.pb) under "
            f"{where}.\n"
            "Produce one with `make demo` (writes out/serving/lesionlens/<version>), or "
            "`.venv/bin/python local_runner.py --profile busi-paper --data out/busi-paper/records`"
            ", or pass --model-dir.",
            file=sys.stderr,
        )
        return 2
    meta_path = model_dir / C.MODEL_INFO
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    size = int(meta.get("image_size", 299))
    temperature = float(meta.get("decision", {}).get("temperature", 1.0))

    machine = machine_info()
    print(f"[bench] loading {model_dir} (image_size {size})", flush=True)
    keras_model = keras.models.load_model(str(model_dir), compile=False)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def keras_forward(images: tf.Tensor) -> tf.Tensor:
        # the served probabilities are softmax(logits / T): the same calibration here
        probabilities = keras_model(images, training=False)
        return tf.nn.softmax(tf.math.log(probabilities) / temperature)

    loaded = tf.saved_model.load(str(model_dir))
    signatures = loaded.signatures
    pool, source = load_examples(model_dir, args.records, max(args.batch_sizes) * 4)
    description = describe_examples(pool)
    print(f"[bench] inputs: {description}", flush=True)

    server = serve(model_dir, "lesionlens", port=0, rest_port=None)
    probe = GrpcProbe(server.grpc_target, server.model_name)
    runs = []
    try:
        variants = build_variants(keras_forward, signatures, probe)
        gradcam_shape: list[int] = []
        for batch in args.batch_sizes:
            batches = make_batches(pool, batch, signatures["transform_features"], size)
            if not gradcam_shape:
                out = signatures[C.SERVING_DEFAULT](examples=tf.constant(batches.examples[0]))
                gradcam_shape = list(out[C.GRADCAM].shape[1:])
            print(f"[bench] batch {batch}: warm-up {args.warmup}, {args.iters} rounds", flush=True)
            times, diffs = measure(variants, batches, args.iters, args.warmup)
            run = {"batch": batch, **summarize(times, batch)}
            run["max_abs_prob_diff_vs_a"] = diffs
            deployable = signatures[C.SERVING_DEFAULT](examples=tf.constant(batches.bare[0]))
            run["no_mask_response_bytes_per_image"] = response_bytes(deployable) / batch
            sources = [s.decode() for s in deployable[C.ROI_SOURCE].numpy()]
            run["roi_sources"] = {s: sources.count(s) for s in sorted(set(sources))}
            run["grpc_bytes_per_image"] = {
                "request": probe.request_bytes[batch] / batch,
                "response": probe.response_bytes[batch] / batch,
                "gradcam": probe.gradcam_bytes[batch] / batch,
            }
            runs.append(run)
    finally:
        probe.channel.close()
        server.stop()
    machine["loadavg_end"] = os.getloadavg()[0]

    result = {
        "machine": machine,
        "model": {
            "dir": str(model_dir),
            "image_size": size,
            "classes": meta.get("classes", []),
            "gradcam_shape": gradcam_shape,
        },
        "inputs": {"source": source, "description": description},
        "iters": args.iters,
        "warmup": args.warmup,
        "goals": {
            "c/b": GOAL_GRADCAM_OVERHEAD,
            "b/a": GOAL_TRANSFORM_OVERHEAD,
            "gradcam_bytes_per_image": GOAL_GRADCAM_BYTES,
            "e/b": GOAL_NO_MASK_OVERHEAD,
            "no_mask_response_bytes_per_image": GOAL_NO_MASK_RESPONSE_BYTES,
        },
        "runs": runs,
    }
    for run in runs:
        run["pass"] = {
            "c/b": run["ratios"]["c/b"] <= GOAL_GRADCAM_OVERHEAD,
            "b/a": run["ratios"]["b/a"] <= GOAL_TRANSFORM_OVERHEAD,
            "gradcam_bytes": run["grpc_bytes_per_image"]["gradcam"] <= GOAL_GRADCAM_BYTES,
            "e/b": run["ratios"]["e/b"] <= GOAL_NO_MASK_OVERHEAD,
            "no_mask_bytes": run["no_mask_response_bytes_per_image"] <= GOAL_NO_MASK_RESPONSE_BYTES,
        }
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
