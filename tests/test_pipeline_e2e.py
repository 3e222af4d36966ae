"""End to end: every component runs and is recorded in MLMD, a blessed model is pushed,
an unreachable threshold blocks the push, and an unchanged rerun is served from cache.
The runs are the installed package's (see the `demo_pipeline` fixture)."""

import json
import os

import numpy as np
import pytest
from conftest import DEMO_RUN, read_raw_examples, run_python
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from modules import contract as C
from pipeline.local import metadata_connection
from pipeline.results import format_metrics, latest_results

COMPONENTS = [
    "ImportExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "Smote",
    "Trainer",  # two: the segmenter's and the classifier's
    "SegmenterEvaluation",
    "PredictedRoi",
    "Evaluator",
    "Pusher",
    "ModelCard",
    "BootstrapIntervals",
]


@pytest.fixture(scope="module")
def first_results(demo_pipeline):
    """Results of the fixture's run, read before any test here reruns the pipeline."""
    return latest_results(metadata_connection(demo_pipeline[0]))


def store_for(cfg):
    return metadata_store.MetadataStore(metadata_connection(cfg))


def executions_by_component(store) -> dict[str, list]:
    types = {t.id: t.name for t in store.get_execution_types()}
    out: dict[str, list] = {}
    for e in store.get_executions():
        name = types[e.type_id].rsplit(".", 1)[-1]
        out.setdefault(name, []).append(e)
    return out


def versions(cfg) -> list[str]:
    return sorted(os.listdir(os.path.join(cfg.serving_root, cfg.model_name)))


def test_first_run_executes_every_component_and_pushes(demo_pipeline, first_results):
    cfg, pushed, _ = demo_pipeline
    by = executions_by_component(store_for(cfg))
    complete = metadata_store_pb2.Execution.COMPLETE
    for name in COMPONENTS:
        assert name in by, f"{name} has no execution in MLMD: {sorted(by)}"
        assert any(e.last_known_state == complete for e in by[name]), name
    assert os.path.dirname(pushed) == os.path.join(cfg.serving_root, cfg.model_name)
    assert os.path.basename(pushed).isdigit()  # TF Serving layout <root>/<name>/<int version>
    assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
    assert len(by["Trainer"]) >= 2  # segmenter and classifier, pushed as one SavedModel
    res = first_results
    metrics = res["metrics"]
    assert metrics["overall"]["example_count"] == 4  # round(15% of 12) = 2 per class
    assert {"modality=ultrasound", "dataset=synthetic", "label=0", "label=1"} <= set(metrics)
    assert set(res["intervals"]) == set(metrics)  # every TFMA slice has its intervals
    # Two test examples per class: the stratified bootstrap defines every overall interval,
    # and TFMA's point estimate lies inside it.
    for name in ("binary_accuracy", "auc", "recall", "specificity"):
        lower, upper = res["intervals"]["overall"][name]
        assert lower <= metrics["overall"][name] <= upper, (name, lower, upper)
    # the decision: fitted on eval for the configured goal, reported beside P > 0.5 on test
    with open(os.path.join(pushed, "assets.extra", "lesionlens.json")) as f:
        decision = json.load(f)["decision"]
    assert decision["eval_sensitivity"] >= cfg.operating_target
    assert decision["temperature"] > 0 and 0.0 <= decision["threshold"] <= 1.0
    assert res["calibration"]["temperature"] == decision["temperature"]
    assert set(res["at_probability_0_5"]["intervals"]) >= {"recall", "specificity"}
    table = format_metrics(metrics, res["intervals"]).splitlines()
    overall = table.index(next(line for line in table if line.startswith("overall")))
    assert table[overall].split()[1] == "4"  # example count
    assert table[overall + 1].split()[:2] == ["95%", "CI"]
    for cell in table[overall + 1].split()[2:]:  # printed bounds stay within [0, 1]
        if cell != "-":
            lower, upper = map(float, cell.split("-"))
            assert 0.0 <= lower <= upper <= 1.0, cell


def test_rerun_is_cached_per_component_and_unreachable_threshold_blocks_push(
    installed, demo_pipeline
):
    """A rerun that raises a threshold after an edit to the intervals' code (in the installed
    package): the steps that import that code run again, every other step upstream of the
    Evaluator comes from the cache (both Trainers, Transform, SMOTE), the Evaluator judges
    again, and the model it now rejects is not pushed."""
    cfg, _, records = demo_pipeline
    before = versions(cfg)
    store = store_for(cfg)
    seen = {e.id for e in store.get_executions()}
    edited = installed[0] / "modules" / "intervals" / "multiclass.py"
    source = edited.read_text()
    edited.write_text(source + "\n# an edit: reruns the steps that import it\n")
    try:
        out = run_python(
            installed[1], records.parent, *DEMO_RUN, "--threshold", "binary_accuracy=1.01"
        )
    finally:
        edited.write_text(source)
    assert "model NOT pushed" in out, out[-2000:]
    strict = cfg.replace(thresholds={"binary_accuracy": 1.01})
    by = executions_by_component(store)
    cached, complete = metadata_store_pb2.Execution.CACHED, metadata_store_pb2.Execution.COMPLETE
    upstream = ("StatisticsGen", "Transform", "Smote", "PredictedRoi", "Trainer")
    # BootstrapIntervals imports multiclass.py; SegmenterEvaluation imports the intervals
    # package, whose __init__ imports it too
    for name, state in [(n, cached) for n in upstream] + [
        ("BootstrapIntervals", complete),
        ("SegmenterEvaluation", complete),
    ]:
        states = [e.last_known_state for e in by[name] if e.id not in seen]
        assert states == [state] * (2 if name == "Trainer" else 1), name
    [evaluation] = [e for e in by["Evaluator"] if e.id not in seen]
    assert evaluation.last_known_state == metadata_store_pb2.Execution.COMPLETE
    res = latest_results(metadata_connection(strict))
    assert not res["blessed"] and not res["pushed"]
    assert versions(cfg) == before


def test_intervals_recomputed_independently_are_identical(demo_pipeline, first_results):
    """Same model, same test split: scoring again in this process and resampling with the
    config's seed gives bounds equal to the digit, and the bootstrap's own point estimates
    agree with TFMA's (AUC up to TFMA's histogram approximation)."""
    from modules.intervals.bootstrap import slice_intervals
    from modules.intervals.component import INTERVALS_FILE, MetricIntervals, score_split

    cfg, pushed, records = demo_pipeline
    store = store_for(cfg)
    # the first run's and (when the rerun test ran) the rerun's, after a code edit: the same
    artifacts = store.get_artifacts_by_type(MetricIntervals.TYPE_NAME)
    runs = []
    for artifact in artifacts:
        with open(os.path.join(artifact.uri, INTERVALS_FILE)) as f:
            runs.append(json.load(f))
    stored = runs[0]
    assert all(run == stored for run in runs)
    assert stored["seed"] == cfg.seed and stored["resamples"] == cfg.interval_resamples
    raw = read_raw_examples(records, "test")
    scored = score_split(pushed, raw[::-1], list(cfg.slice_features))
    decision = scored.outputs[C.PREDICT_NO_MASK][C.DECISION_SCORE]
    again = slice_intervals(
        scored.labels,
        decision,
        scored.features,
        list(cfg.slice_features),
        cfg.interval_resamples,
        cfg.seed,
        cfg.interval_level,
    )
    assert json.loads(json.dumps(again)) == stored["slices"]
    tfma_overall = first_results["metrics"]["overall"]
    # TFMA's AUC sums a 10,000-bucket histogram: scores closer than a bucket tie there (the
    # 1-epoch model's scores can differ by 1e-5), so its AUC is comparable only when they don't.
    resolved = np.diff(np.sort(decision)).min() > 2e-4
    for name, value in stored["slices"]["overall"]["metrics"].items():
        if name == "auc" and not resolved:
            continue
        if np.isfinite(value) and np.isfinite(tfma_overall[name]):
            tol = 0.02 if name == "auc" else 1e-6
            assert abs(value - tfma_overall[name]) <= tol, (name, value, tfma_overall[name])
