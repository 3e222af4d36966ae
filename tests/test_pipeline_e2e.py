"""End to end: every component runs and is recorded in MLMD, a blessed model is pushed,
an unreachable threshold blocks the push, and an unchanged rerun is served from cache."""

import os

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration import metadata

from pipeline.pipeline import create_pipeline
from pipeline.results import format_metrics, latest_results

COMPONENTS = [
    "ImportExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "Smote",
    "Trainer",
    "Evaluator",
    "Pusher",
]


def store_for(cfg):
    return metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(cfg.metadata_path)
    )


def executions_by_component(store) -> dict[str, list]:
    types = {t.id: t.name for t in store.get_execution_types()}
    out: dict[str, list] = {}
    for e in store.get_executions():
        name = types[e.type_id].rsplit(".", 1)[-1]
        out.setdefault(name, []).append(e)
    return out


def versions(cfg) -> list[str]:
    return sorted(os.listdir(os.path.join(cfg.serving_root, cfg.model_name)))


def test_first_run_executes_every_component_and_pushes(demo_pipeline):
    cfg, pushed, _ = demo_pipeline
    by = executions_by_component(store_for(cfg))
    for name in COMPONENTS:
        assert name in by, f"{name} has no execution in MLMD: {sorted(by)}"
        assert by[name][0].last_known_state == metadata_store_pb2.Execution.COMPLETE, name
    assert os.path.dirname(pushed) == os.path.join(cfg.serving_root, cfg.model_name)
    assert os.path.basename(pushed).isdigit()  # TF Serving layout <root>/<name>/<int version>
    assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
    res = latest_results(cfg)
    metrics = res["metrics"]
    assert metrics["overall"]["example_count"] == 4  # round(15% of 12) = 2 per class
    assert {"modality=ultrasound", "dataset=synthetic", "label=0", "label=1"} <= set(metrics)
    # TFMA's jackknife interval around every rate metric, the point estimate inside it
    for name in ("binary_accuracy", "auc", "recall", "specificity"):
        lower, upper = res["intervals"]["overall"][name]
        assert lower <= metrics["overall"][name] <= upper, (name, lower, upper)
    table = format_metrics(metrics, res["intervals"]).splitlines()
    overall = table.index(next(line for line in table if line.startswith("overall")))
    assert table[overall].split()[1] == "4"  # example count
    assert table[overall + 1].split()[:2] == ["95%", "CI"]
    for cell in table[overall + 1].split()[2:]:  # printed bounds stay within [0, 1]
        if cell != "-":
            lower, upper = map(float, cell.split("-"))
            assert 0.0 <= lower <= upper <= 1.0, cell


def test_rerun_is_cached_and_unreachable_threshold_blocks_push(demo_pipeline):
    cfg, _, _ = demo_pipeline
    before = versions(cfg)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
    by = executions_by_component(store_for(cfg))
    for name in ("StatisticsGen", "Transform", "Smote", "Trainer"):
        states = [e.last_known_state for e in by[name]]
        assert states == [
            metadata_store_pb2.Execution.COMPLETE,
            metadata_store_pb2.Execution.CACHED,
        ], name

    strict = cfg.replace(thresholds={"binary_accuracy": 1.01})
    tfx.orchestration.LocalDagRunner().run(create_pipeline(strict))
    res = latest_results(strict)
    assert not res["blessed"] and not res["pushed"]
    assert versions(cfg)[: len(before)] == before
    assert len(versions(cfg)) <= len(before) + 1  # only the cached rerun may have pushed
