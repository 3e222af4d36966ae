"""The Beam ingestion job: decode and validate in parallel, split globally, write TFRecords.

Runs on the DirectRunner by default; any Beam runner works through standard pipeline options
(`--runner DataflowRunner --project ... --temp_location gs://...`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.options.pipeline_options import PipelineOptions

from lesionlens import beam_files, progress
from lesionlens.ingest import layouts, records, splits
from modules import contract as C

OK, SKIPPED_TAG = "ok", "skipped"
SHARD_SIZE = 5000  # examples per TFRecord file (at least one file per split)
READ_CHUNK = 16  # images read as one unit: the unit of progress marks (lesionlens.progress)
log = logging.getLogger(__name__)


@dataclass
class IngestConfig:
    src: str
    out: str
    layout: str = "auto"
    classes: tuple[str, ...] | None = None
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = 42
    protocol: str = "grouped"
    max_distance: int = 6
    drop_conflicts: bool = False
    dataset: str | None = None
    max_pixels: int = C.DEFAULT_MAX_IMAGE_PIXELS  # larger images are skipped, from the header
    started: float | None = None  # time.time() when the command started; default: run()'s


class IngestError(RuntimeError):
    """Nothing valid to write, or the source cannot be used at all."""


def _read(c: layouts.Candidate, max_pixels: int) -> tuple[str, object]:
    """(OK, Record) or (SKIPPED, {"path", "reason"}): one odd file never fails the job."""
    try:
        return OK, records.read_record(c, max_pixels)
    except records.BadInput as e:
        return SKIPPED_TAG, {"path": c.image_id, "reason": str(e)}
    except Exception as e:
        reason = f"{c.path}: unexpected error reading it: {type(e).__name__}: {e}"
        return SKIPPED_TAG, {"path": c.image_id, "reason": reason}


def _read_chunk(chunk: tuple[int, list[layouts.Candidate]], max_pixels: int, marks: str):
    """Reads one chunk of candidates, then marks it done for the launcher's progress lines."""
    index, candidates = chunk
    results = [_read(c, max_pixels) for c in candidates]
    progress.mark(marks, f"read-{index}", len(results))
    yield from results


def _plan(keys: list[tuple[str, int, str]], cfg: IngestConfig) -> dict:
    """Global step: near-duplicate groups, label conflicts and the split of every image."""
    items = [splits.Item(i, lab, h) for i, lab, h in keys]
    groups = splits.near_duplicate_groups(items, cfg.max_distance)
    conflicts = splits.label_conflicts(items, groups)
    dup_groups = [
        {"group_id": g, "members": sorted(it.image_id for it in m)}
        for g, m in sorted(splits.group_members(items, groups).items())
        if len(m) > 1
    ]
    dropped: dict[str, str] = {}
    if cfg.drop_conflicts:
        for c in conflicts:
            labels = sorted(set(c["members"].values()))
            reason = f"label conflict: near-duplicate group {c['group_id']} has labels {labels}"
            dropped.update(dict.fromkeys(c["members"], reason))
        items = [it for it in items if it.image_id not in dropped]
    if cfg.protocol == "paper":
        assignment = splits.paper_split(items, cfg.fractions, cfg.seed)
    else:
        assignment = splits.grouped_split(items, groups, cfg.fractions, cfg.seed)
    labels = {it.image_id: it.label for it in items}
    return {
        "assignment": {i: [assignment[i], groups[i], labels[i]] for i in assignment},
        "dropped": dropped,
        "duplicate_groups": dup_groups,
        "label_conflicts": conflicts,
        "leakage": splits.leakage(assignment, groups),
    }


def _assignments(plan: dict):
    for image_id, (split, group_id, _label) in plan["assignment"].items():
        yield image_id, (split, group_id)


def _to_shard(joined: tuple[str, dict], shards: int, modality: str, dataset: str):
    """(split, shard) -> serialized example, for each image the plan kept (once)."""
    image_id, parts = joined
    for rec in list(parts["record"])[:1]:
        for split, group_id in parts["split"]:
            example = records.to_example(rec, modality, dataset, group_id)
            yield (split, beam_files.shard_of(image_id, shards)), (image_id, example)


def _write_shard(out: str, shards: int):
    def write(key: tuple[str, int], items: list[tuple[str, bytes]]) -> int:
        split, shard = key
        name = f"{C.SHARD_PREFIX}-{shard:05d}-of-{shards:05d}{C.SHARD_SUFFIX}"
        path = FileSystems.join(out, split, name)
        with FileSystems.create(path, compression_type=CompressionTypes.GZIP) as f:
            for _, example in sorted(items):
                _TFRecordUtil.write_record(f, example)
        return len(items)

    return write


def _write_json(path: str, lines: bool):
    def write(_key, items: list) -> int:
        if lines:
            text = "".join(json.dumps(x) + "\n" for x in sorted(items, key=json.dumps))
        else:
            text = json.dumps(items[0])
        beam_files.write_bytes(path, text.encode())
        return len(items)

    return write


def build(p: beam.Pipeline, disc: layouts.Discovery, cfg: IngestConfig, layout: str, dataset: str):
    """Wires the Beam graph: read + validate, one global split plan, per-split TFRecords, and
    the plan and skipped inputs as JSON for the manifest.

    Only Create, ParDo, GroupByKey and Flatten, with no tagged outputs, side inputs or output
    from finish_bundle, and every sink feeding one last step: so the DaskRunner (which
    supports just those and computes only the last transform) runs it like the others.
    """
    modality = C.LAYOUT_MODALITY[layout]
    shards = max(1, -(-len(disc.candidates) // SHARD_SIZE))
    found = disc.candidates
    chunks = [(i, found[i : i + READ_CHUNK]) for i in range(0, len(found), READ_CHUNK)]
    read = (
        p
        | "Candidates" >> beam.Create(chunks)
        | "ReadAndValidate" >> beam.FlatMap(_read_chunk, cfg.max_pixels, _marks(cfg))
    )
    good = read | "Good" >> beam.Filter(lambda r: r[0] == OK) | "Records" >> beam.Values()
    plan = (
        good
        | "Keys" >> beam.Map(lambda r: (None, (r.image_id, r.label, r.phash)))
        | "AllKeys" >> beam.GroupByKey()
        | "Plan" >> beam.MapTuple(lambda _, keys: _plan(sorted(keys), cfg))
    )
    joined = {
        "record": good | "ById" >> beam.Map(lambda r: (r.image_id, r)),
        "split": plan | "Assignments" >> beam.FlatMap(_assignments),
    } | "AttachSplit" >> beam.CoGroupByKey()
    work = FileSystems.join(cfg.out, "_work")
    written = [
        joined
        | "ToExamples" >> beam.FlatMap(_to_shard, shards, modality, dataset)
        | "WriteShards"
        >> beam_files.WriteGroups(
            _write_shard(cfg.out, shards),
            empty_groups=[(s, i) for s in C.SPLITS for i in range(shards)],
        ),
        plan
        | "PlanKey" >> beam.Map(lambda x: (None, x))
        | "WritePlan"
        >> beam_files.WriteGroups(_write_json(FileSystems.join(work, "plan.json"), False)),
        read
        | "Bad" >> beam.Filter(lambda r: r[0] == SKIPPED_TAG)
        | "SkippedKey" >> beam.Map(lambda r: (None, r[1]))
        | "WriteSkipped"
        >> beam_files.WriteGroups(
            _write_json(FileSystems.join(work, "skipped.jsonl"), True), empty_groups=[None]
        ),
    ]
    return written | "AllWritten" >> beam.Flatten() | "Done" >> beam.Map(lambda n: n)


def _marks(cfg: IngestConfig) -> str:
    return FileSystems.join(cfg.out, "_work", "progress")


def _read_text(path: str) -> str:
    if not FileSystems.exists(path):
        return ""
    with FileSystems.open(path) as f:
        return f.read().decode()


def run(cfg: IngestConfig, beam_args: list[str] | None = None) -> dict:
    """Runs the job and returns the manifest (also written to OUT/manifest.json)."""
    t0 = cfg.started or time.time()
    layout = layouts.detect_layout(cfg.src) if cfg.layout == "auto" else cfg.layout
    classes = tuple(cfg.classes or C.DEFAULT_CLASSES[layout])
    disc = layouts.discover(cfg.src, layout, classes)
    if not disc.candidates:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in disc.skipped[:5])
        raise IngestError(f"{cfg.src}: no images of classes {', '.join(classes)} found. {reasons}")
    synthetic = os.path.exists(os.path.join(cfg.src, layouts.SYNTH_MARKER))
    dataset = cfg.dataset or (C.SYNTHETIC_DATASET if synthetic else C.LAYOUT_DATASET[layout])
    log.info(
        "%d images (%s, classes %s) from %s",
        len(disc.candidates),
        layout,
        ",".join(classes),
        cfg.src,
    )
    for split in C.SPLITS:  # a rerun must not mix old shards with new ones
        old = FileSystems.match([FileSystems.join(cfg.out, split, "data-*")])[0].metadata_list
        if old:
            FileSystems.delete([m.path for m in old])

    options = PipelineOptions(beam_args or [])
    marks = _marks(cfg)
    progress.clear(marks)
    emit = lambda line: log.info("%s", line)  # noqa: E731
    try:
        with progress.Reporter(marks, len(disc.candidates), "images", emit=emit):
            beam_files.run_pipeline(lambda p: build(p, disc, cfg, layout, dataset), options)
    finally:
        progress.clear(marks)

    work = FileSystems.join(cfg.out, "_work")
    plan = json.loads(_read_text(FileSystems.join(work, "plan.json")) or "null")
    bad = beam_files.read_jsonl(FileSystems.join(work, "skipped.jsonl"))
    skipped = disc.skipped + sorted(bad, key=lambda s: s["path"])
    if not plan or not plan["assignment"]:
        _write_manifest(cfg, {"source": cfg.src, "examples": 0, "skipped": skipped})
        raise IngestError(
            f"{cfg.src}: no valid images remain ({len(skipped)} inputs skipped, reasons in "
            f"{FileSystems.join(cfg.out, C.MANIFEST)})"
        )
    skipped += [{"path": i, "reason": r} for i, r in sorted(plan["dropped"].items())]
    names = {lab: name for name, lab in C.LABELS.items() if name in classes}
    counts: dict[str, dict[str, int]] = {s: {} for s in C.SPLITS}
    for split, _gid, label in plan["assignment"].values():
        counts[split][names[label]] = counts[split].get(names[label], 0) + 1
    manifest = {
        "source": cfg.src,
        "layout": layout,
        "dataset": dataset,
        "modality": C.LAYOUT_MODALITY[layout],
        "classes": {names[lab]: lab for lab in sorted(names)},
        "protocol": cfg.protocol,
        "fractions": list(cfg.fractions),
        "seed": cfg.seed,
        "near_duplicate_max_distance": cfg.max_distance,
        "examples": len(plan["assignment"]),
        "counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "excluded_classes": disc.excluded,
        "duplicate_groups": plan["duplicate_groups"],
        "label_conflicts": plan["label_conflicts"],
        "leakage": plan["leakage"],
        "conflicts_dropped": cfg.drop_conflicts,
        "skipped": skipped,
        "files": {s: FileSystems.join(cfg.out, s, C.SHARD_GLOB) for s in C.SPLITS},
        "wall_seconds": round(time.time() - t0, 1),
    }
    _write_manifest(cfg, manifest)
    FileSystems.delete([work])
    return manifest


def _write_manifest(cfg: IngestConfig, manifest: dict) -> None:
    with FileSystems.create(FileSystems.join(cfg.out, C.MANIFEST)) as f:
        f.write(json.dumps(manifest, indent=2).encode())


def summary_table(m: dict) -> str:
    """A short human summary: examples per split and class, duplicates, skipped inputs."""
    classes = list(m["classes"])
    head = f"{'split':<6}" + "".join(f"{c:>11}" for c in classes) + f"{'total':>8}"
    lines = [head]
    for s in C.SPLITS:
        row = [m["counts"][s].get(c, 0) for c in classes]
        lines.append(f"{s:<6}" + "".join(f"{v:>11}" for v in row) + f"{sum(row):>8}")
    tot = [sum(m["counts"][s].get(c, 0) for s in C.SPLITS) for c in classes]
    lines.append(f"{'all':<6}" + "".join(f"{v:>11}" for v in tot) + f"{sum(tot):>8}")
    dup = m["duplicate_groups"]
    lines.append(
        f"near-duplicate groups: {len(dup)} ({sum(len(g['members']) for g in dup)} images), "
        f"label conflicts: {len(m['label_conflicts'])}"
        + (" (dropped)" if m["conflicts_dropped"] else "")
    )
    leak = m["leakage"]
    lines.append(
        f"near-duplicates across splits: {leak['groups_spanning_splits']} groups; "
        f"test images with a near-duplicate in train: {leak['test_with_duplicate_in_train']}"
        f"/{sum(m['counts']['test'].values())}"
    )
    lines.append(
        f"skipped inputs: {len(m['skipped'])}" + (" (see manifest.json)" if m["skipped"] else "")
    )
    for s in m["skipped"][:10]:
        lines.append(f"  - {s['path']}: {s['reason']}")
    if len(m["skipped"]) > 10:
        lines.append(f"  ... and {len(m['skipped']) - 10} more")
    lines.append(f"protocol {m['protocol']}, seed {m['seed']}, wall time {m['wall_seconds']} s")
    return "\n".join(lines)
