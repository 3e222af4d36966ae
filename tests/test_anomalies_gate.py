"""ExampleValidator's anomalies become one readable error that stops the run."""

import os

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from modules.anomalies_gate import anomaly_lines
from schema import schema_path


def anomalies_artifact(tmp_path, rows_by_split):
    import pandas as pd

    schema = io_utils.parse_pbtxt_file(schema_path(), schema_pb2.Schema())
    art = standard_artifacts.ExampleAnomalies()
    art.uri = str(tmp_path)
    art.split_names = artifact_utils.encode_split_names(list(rows_by_split))
    for split, rows in rows_by_split.items():
        stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame(rows))
        anomalies = tfdv.validate_statistics(stats, schema)
        os.makedirs(tmp_path / f"Split-{split}")  # creates tmp_path too
        with open(tmp_path / f"Split-{split}" / "SchemaDiff.pb", "wb") as f:
            f.write(anomalies.SerializeToString())
    return art


def row(modality=b"ultrasound", label=0):
    return {
        "image": b"png",
        "mask": b"",
        "label": label,
        "modality": modality,
        "dataset": b"busi",
        "image_id": b"a.png",
        "group_id": b"a.png",
    }


def test_clean_data_has_no_anomalies(tmp_path):
    art = anomalies_artifact(tmp_path, {"train": [row(), row(b"mri", 1)]})
    assert anomaly_lines(art) == []


def test_unknown_modality_and_label_are_reported_by_split_and_feature(tmp_path):
    art = anomalies_artifact(tmp_path, {"train": [row()], "eval": [row(b"xray", 7)]})
    lines = anomaly_lines(art)
    assert any("eval: feature 'modality'" in line for line in lines), lines
    assert any("eval: feature 'label'" in line for line in lines), lines
    assert not any(line.strip().startswith("train") for line in lines)


def test_gate_executor_stops_the_run_with_the_lines(tmp_path):
    from modules.anomalies_gate import AnomaliesGate, DataAnomaliesError

    executor = AnomaliesGate.EXECUTOR_SPEC.executor_class()
    clean = anomalies_artifact(tmp_path / "clean", {"train": [row()]})
    executor.Do({"anomalies": [clean]}, {}, {})  # no anomalies: passes
    bad = anomalies_artifact(tmp_path / "bad", {"eval": [row(b"xray")]})
    with pytest.raises(DataAnomaliesError, match="eval: feature 'modality'"):
        executor.Do({"anomalies": [bad]}, {}, {})
