"""The Beam scoring job: plan inputs, read and validate, batch, RunInference, write.

Uses only Create, ParDo, GroupByKey and Flatten, with no tagged outputs, side inputs or
output from finish_bundle, so it runs unchanged on the DirectRunner, Dataflow and Beam's
DaskRunner (whose translation supports exactly those, and computes only the graph's last
transform: every sink therefore feeds one final step).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from lesionlens import progress
from lesionlens.beam_files import run_pipeline, write_bytes
from lesionlens.score import gallery, sinks, sources
from lesionlens.score.inference import (
    LATENCY,
    ExampleSignatureHandler,
    check_signature,
    preload,
    release,
    resolve_model,
)
from modules import contract as C
from serving.cli import text_output

log = logging.getLogger(__name__)
SUMMARY = "summary.json"
PROGRESS = "_progress"  # workers' marks of finished batches (lesionlens.progress), removed after
READ_THREADS = 4  # files of a batch read at once (Pillow and zlib release the GIL)
LABEL_NAMES = {label: name for name, label in reversed(C.LABELS.items())}  # first name wins


@dataclass
class ScoreConfig:
    model: str
    src: str
    out: str
    batch_size: int = 16
    overlays: bool = False
    alpha: float = 0.4
    overlay_style: str = "captioned"  # serving.overlay.STYLES
    signature: str | None = None  # default: serving_default with overlays, else predict_only
    classes: tuple[str, ...] | None = None  # default: the model's own (lesionlens.json)
    num_shards: int = 0  # 0: one per 10,000 inputs
    max_pixels: int = C.DEFAULT_MAX_IMAGE_PIXELS
    started: float | None = None  # time.time() when the command started; default: run()'s


class NothingScored(RuntimeError):
    """No image could be scored; the summary says why."""


def model_info(model_path: str) -> dict:
    """The model's `lesionlens.json` ({} for a model exported without one)."""
    info = FileSystems.join(model_path, *C.MODEL_INFO.split("/"))
    if not FileSystems.exists(info):
        return {}
    with FileSystems.open(info, compression_type="uncompressed") as f:
        return json.loads(f.read())


def model_classes(model_path: str) -> tuple[str, ...]:
    classes = model_info(model_path).get("classes")
    return tuple(classes) if classes else tuple(C.DEFAULT_CLASSES["busi"])


class _Read(beam.DoFn):
    """Reads and checks one planned unit (a batch of images, or a TFRecord file) into
    batches of raw examples and rejected records; meanwhile this worker loads the model."""

    def __init__(self, model_path: str, batch_size: int, max_pixels: int, marks: str) -> None:
        super().__init__()
        self.model_path, self.batch_size, self.max_pixels = model_path, batch_size, max_pixels
        self.marks = marks

    def setup(self) -> None:
        import tensorflow  # noqa: F401 - imported whole here: a second thread importing it
        # at the same time as this one (examples below, the model load) sees a half-made module

        self.pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read")
        preload(self.model_path)

    def process(self, unit):
        if isinstance(unit, sources.RecordFile):
            key, found = (
                f"read-r{unit.index}",
                sources.read_records(unit, self.batch_size, self.max_pixels),
            )
        else:
            key, found = f"read-{unit.index}", sources.read_batch(unit, self.max_pixels, self.pool)
        rejected = 0
        for out in found:
            rejected += out[0] == sources.REJECTED
            yield out
        progress.mark(self.marks, key, rejected)  # the scored ones are marked by _ToRows

    def teardown(self) -> None:
        self.pool.shutdown(wait=False)


def model_label(model_path: str) -> tuple[str, str | None]:
    """(name, version) of a model folder: a Pusher's `<name>/<version>`, else (folder, None)."""
    path = model_path.rstrip("/")
    folder, last = path.rsplit("/", 1) if "/" in path else ("", path)
    if last.isdigit() and folder:
        return folder.rsplit("/", 1)[-1], last
    return last, None


class _ToRows(beam.DoFn):
    """Prediction rows (and overlays with their gallery thumbnails) from scored batches;
    images the model refused become rejected records."""

    def __init__(
        self, out: str, classes: tuple[str, ...], cfg: ScoreConfig, model_path: str, sig: str
    ):
        super().__init__()
        self.signature = sig
        self.out, self.classes, self.overlays = out, classes, cfg.overlays
        self.alpha, self.style = cfg.alpha, cfg.overlay_style
        self.model, self.version = model_label(model_path)
        self.explanation = model_info(model_path).get("explanation")  # None: Grad-CAM
        self.marks = FileSystems.join(out, PROGRESS)

    def process(self, result):
        from tensorflow.core.example import example_pb2

        (key, items), outputs = result.example, result.inference
        for (path, label_name, raw), row in zip(items, outputs, strict=True):
            feats = example_pb2.Example.FromString(raw).features.feature
            yield sinks.AUDIT, self._audit(path, feats[C.IMAGE].bytes_list.value[0], row)
            if isinstance(row, str):
                yield sinks.REJECTED, {"path": path, "reason": row}
                continue
            image_id = feats[C.IMAGE_ID].bytes_list.value[0].decode("utf-8")
            label = feats[C.LABEL].int64_list.value[0] if C.LABEL in feats else None
            class_id = int(row[C.CLASS_ID])
            record = {
                "image_id": image_id,
                "path": path,
                "label": label_name or (LABEL_NAMES.get(label) if label is not None else None),
                "probabilities": [float(p) for p in row[C.PROBABILITIES]],
                "class_id": class_id,
                "class_name": self._name(class_id),
                "threshold": float(row[C.THRESHOLD]) if C.THRESHOLD in row else None,
                "positive_probability": float(row[C.POSITIVE_PROBABILITY])
                if C.POSITIVE_PROBABILITY in row
                else None,
                "roi_source": text_output(row[C.ROI_SOURCE]) if C.ROI_SOURCE in row else None,
                "gradcam_overlay": None,
            }
            if self.overlays and C.GRADCAM in row:
                self._write_overlay(record, feats, row)
            yield sinks.PREDICTIONS, record
        progress.mark(self.marks, "scored-" + "-".join(map(str, key)), len(items))

    def _audit(self, path: str, image: bytes, row: dict | str) -> dict:
        """The image's audit line (serving/audit.py's fields), with its path for
        sorting; the launcher drops the path before writing OUT/audit.jsonl."""
        from serving import audit

        answered = not isinstance(row, str)
        fields = audit.entry(
            request_id=audit.new_request_id(),
            protocol="score",
            model=self.model,
            version=self.version,
            signature=self.signature,
            hashes=[audit.sha256(image)],
            answers=audit.decisions({k: [v] for k, v in row.items()}, 1) if answered else (),
            latency_ms=float(row[LATENCY]) if answered else 0.0,
            outcome="OK" if answered else "REJECTED",
        )
        return {**fields, "path": path}

    def _write_overlay(self, record: dict, feats, row: dict) -> None:
        from lesionlens.score.gallery import thumbnail_name
        from serving.overlay import Prediction, render, scaled_heat, thumbnail

        image = feats[C.IMAGE].bytes_list.value[0]
        mask = feats[C.MASK].bytes_list.value[0] if C.MASK in feats else b""
        drawn = {"roi_mask": row.get(C.ROI_MASK), "given_mask": mask, "alpha": self.alpha}
        prediction = Prediction.from_record(
            record, self.model, self.version, self.classes, self.explanation
        )
        png, _ = render(image, row[C.GRADCAM], prediction, style=self.style, **drawn)
        name = sinks.write_overlay(self.out, record["image_id"], record["class_name"], png)
        heat = scaled_heat(row[C.GRADCAM], prediction)[0]  # as on the overlay
        small = thumbnail(image, heat, roi_source=record["roi_source"], **drawn)
        write_bytes(FileSystems.join(self.out, *thumbnail_name(name).split("/")), small)
        record["gradcam_overlay"] = name

    def _name(self, class_id: int) -> str:
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else str(class_id)


def build(p: beam.Pipeline, plan: sources.Plan, cfg: ScoreConfig, model_path: str, sig: str):
    """Wires the graph; returns the final PCollection every output feeds."""
    classes = cfg.classes or model_classes(model_path)
    shards = cfg.num_shards or max(1, -(-sources.image_count(plan) // 10_000))
    read = (
        p
        | "Plan" >> beam.Create(plan.inputs)
        | "ReadAndValidate"
        >> beam.ParDo(
            _Read(model_path, cfg.batch_size, cfg.max_pixels, FileSystems.join(cfg.out, PROGRESS))
        )
    )
    rows = (
        read
        | "Batches" >> beam.Filter(lambda r: r[0] == sources.BATCH)
        | "OneBatchEach" >> beam.Map(lambda r: [(r[1], r[2])])  # RunInference's own batching off
        | "RunInference" >> RunInference(ExampleSignatureHandler(model_path, sig))
        | "ToRows" >> beam.ParDo(_ToRows(cfg.out, classes, cfg, model_path, sig))
    )
    bad = [
        read
        | "Bad" >> beam.Filter(lambda r: r[0] == sources.REJECTED)
        | "BadRows" >> beam.Map(lambda r: {"path": r[1], "reason": r[2]}),
        rows | "Refused" >> beam.Filter(lambda r: r[0] == sinks.REJECTED) | beam.Values(),
    ]
    if plan.skipped:
        bad.append(p | "Skipped" >> beam.Create(plan.skipped))
    written = [
        rows
        | "Scored" >> beam.Filter(lambda r: r[0] == sinks.PREDICTIONS)
        | "ScoredRows" >> beam.Values()
        | "WritePredictions" >> sinks.WriteShards(cfg.out, sinks.PREDICTIONS, shards),
        bad
        | "AllRejected" >> beam.Flatten()
        | "WriteRejected" >> sinks.WriteShards(cfg.out, sinks.REJECTED, 1),
        rows
        | "Audited" >> beam.Filter(lambda r: r[0] == sinks.AUDIT)
        | "AuditRows" >> beam.Values()
        | "WriteAudit" >> sinks.WriteShards(cfg.out, sinks.AUDIT, 1),
    ]
    return written | "AllWritten" >> beam.Flatten() | "Done" >> beam.Map(lambda w: w)


def run(cfg: ScoreConfig, beam_args: list[str] | None = None) -> dict:
    """Runs the job; returns the summary (also OUT/summary.json). Raises ModelError,
    ScoreInputError, or NothingScored (after writing the summary)."""
    t0 = cfg.started or time.time()
    model_path = resolve_model(cfg.model)
    sig = cfg.signature or (C.SERVING_DEFAULT if cfg.overlays else C.PREDICT_ONLY)
    outputs = check_signature(model_path, sig)
    if cfg.overlays and C.GRADCAM not in outputs:
        raise sources.ScoreInputError(
            f"--overlays needs Grad-CAM, which signature {sig!r} does not return"
        )
    plan = sources.plan_inputs(cfg.src, cfg.batch_size)
    log.info(
        "scoring %d %s from %s with %s [%s]",
        sources.image_count(plan) or len(plan.inputs),
        plan.kind,
        cfg.src,
        model_path,
        sig,
    )
    sinks.clear_outputs(cfg.out)
    marks = FileSystems.join(cfg.out, PROGRESS)
    progress.clear(marks)
    t_run = time.time()
    options = PipelineOptions(_dask_partitions(list(beam_args or [])))
    total = sources.image_count(plan) if plan.kind == "images" else None
    try:
        what = "images" if total is not None else "records"
        with progress.Reporter(marks, total, what, emit=lambda line: log.info("%s", line)):
            run_pipeline(lambda p: build(p, plan, cfg, model_path, sig), options)
    finally:
        release(model_path)
        progress.clear(marks)
    seconds = time.time() - t_run
    scored = sinks.read_rows(cfg.out, sinks.PREDICTIONS)
    rejected = sinks.read_rows(cfg.out, sinks.REJECTED)
    write_audit(cfg.out, rejected, model_path, sig)
    summary = {
        "model": model_path,
        "signature": sig,
        "source": cfg.src,
        "scored": len(scored),
        "rejected": len(rejected),
        "pipeline_seconds": round(seconds, 2),
        "images_per_second": round(len(scored) / seconds, 2) if seconds > 0 else None,
        "outputs": {
            "predictions": FileSystems.join(cfg.out, f"{sinks.PREDICTIONS}-*.jsonl|parquet"),
            "rejected": FileSystems.join(cfg.out, f"{sinks.REJECTED}-*.jsonl"),
            "audit": FileSystems.join(cfg.out, sinks.AUDIT_FILE),
            "overlays": FileSystems.join(cfg.out, sinks.OVERLAYS) if cfg.overlays else None,
        },
    }
    if cfg.overlays:
        summary["outputs"]["gallery"] = gallery.write_index(
            cfg.out, scored, rejected, summary, cfg.classes or model_classes(model_path)
        )
    # The run's time as its user lived it: from the command's start (TensorFlow's import,
    # the model's checks, the gallery included), not only the pipeline's part.
    wall = time.time() - t0
    summary["wall_seconds"] = round(wall, 2)
    summary["wall_images_per_second"] = round(len(scored) / wall, 2) if wall > 0 else None
    with FileSystems.create(FileSystems.join(cfg.out, SUMMARY)) as f:
        f.write(json.dumps(summary, indent=2).encode())
    if not scored:
        raise NothingScored(
            f"no image of {cfg.src} could be scored ({len(rejected)} rejected; reasons in "
            f"{summary['outputs']['rejected']})"
        )
    return summary


def write_audit(out: str, rejected: list[dict], model_path: str, sig: str) -> str:
    """OUT/audit.jsonl: the workers' lines (every image the model saw), then one line per
    input rejected before the model (its file's SHA-256 where it can be read), sorted by
    input and stripped of the path: a line names an image by its hash only."""
    from serving import audit

    lines = sinks.read_rows(out, sinks.AUDIT)
    seen = {line["path"] for line in lines}
    model, version = model_label(model_path)
    for r in rejected:
        if r["path"] in seen:
            continue  # refused by the model: its line came from the worker
        fields = audit.entry(
            request_id=audit.new_request_id(),
            protocol="score",
            model=model,
            version=version,
            signature=sig,
            hashes=[_file_sha256(r["path"])],
            latency_ms=0.0,
            outcome="REJECTED",
        )
        lines.append({**fields, "path": r["path"]})
    lines.sort(key=lambda line: (line["path"], line["request_id"]))
    text = "".join(
        json.dumps({k: v for k, v in line.items() if k != "path"}) + "\n" for line in lines
    )
    path = FileSystems.join(out, sinks.AUDIT_FILE)
    write_bytes(path, text.encode("utf-8"))
    shards = FileSystems.match([FileSystems.join(out, f"{sinks.AUDIT}-*")])[0].metadata_list
    if shards:
        FileSystems.delete([m.path for m in shards])
    return path


def _file_sha256(path: str) -> str | None:
    """SHA-256 of a file's bytes, read in chunks; None when it cannot be read (a TFRecord
    record `file#N`, a vanished file)."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            while chunk := f.read(2**20):
                digest.update(chunk)
    except Exception:
        return None
    return digest.hexdigest()


def _dask_partitions(args: list[str]) -> list[str]:
    """On the DaskRunner, one partition per planned unit unless the user chose: its default
    (128 elements per partition) would put all of a few dozen batches on one worker."""
    dask = any("DaskRunner" in a for a in args)
    chosen = any(a.startswith(("--dask_npartitions", "--dask_partition_size")) for a in args)
    return args + ["--dask_partition_size=1"] if dask and not chosen else args


def summary_line(s: dict) -> str:
    """The run's last line: its wall time first, then the pipeline's share of it."""
    return (
        f"scored {s['scored']}, rejected {s['rejected']} in {s['wall_seconds']} s "
        f"({s['wall_images_per_second']} images/s; {s['pipeline_seconds']} s of it in the "
        f"Beam pipeline at {s['images_per_second']} images/s, the rest loading TensorFlow, "
        "checking the model and writing the outputs)"
    )
