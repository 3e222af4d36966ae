"""Stops the run when ExampleValidator found anomalies: a bad batch must not reach training."""

# no `from __future__ import annotations`: the @component decorator reads real type hints

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types import artifact_utils


class DataAnomaliesError(RuntimeError):
    """Raised with one line per anomaly: split, feature, and what is wrong."""


def anomaly_lines(anomalies_artifact) -> "list[str]":
    lines = []
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        path = os.path.join(
            artifact_utils.get_split_uri([anomalies_artifact], split), "SchemaDiff.pb"
        )
        with fileio.open(path, "rb") as f:
            anomalies = anomalies_pb2.Anomalies.FromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            lines.append(
                f"  {split}: feature '{feature}': {info.short_description} ({info.description})"
            )
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"  {split}: dataset: {info.short_description} ({info.description})")
    return lines


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
) -> None:
    lines = anomaly_lines(anomalies)
    if lines:
        raise DataAnomaliesError(
            "ExampleValidator found anomalies against schema/schema.pbtxt; fix the data (or the "
            "curated schema, if the data is right) and rerun:\n" + "\n".join(lines)
        )
