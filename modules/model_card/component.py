"""ModelCard: the step after Pusher that writes the card into the pushed version.

Why after Pusher: the card describes the version TF Serving serves, so it goes beside it
(`<version>/assets.extra/model_card.{json,md}`, which TF Serving does not read); a model the
Evaluator did not bless is not pushed and gets no card. It also stays an artifact of the run.
"""

# no `from __future__ import annotations`: the @component decorator reads real type hints

import json
import logging
import os

import tensorflow as tf
import tfx as tfx_package
from tfx import v1 as tfx
from tfx.types.artifact import Artifact
from tfx.utils import path_utils

from modules import contract as C
from modules.intervals.component import INTERVALS_FILE, MetricIntervals
from modules.model_card.card import CARD_JSON, CARD_MARKDOWN, build_card, render_markdown
from modules.segmenter.evaluation import RESULT_FILE, SegmentationMetrics

log = logging.getLogger(__name__)


class ModelCardArtifact(Artifact):
    """The model card of one run (also copied into the pushed version)."""

    TYPE_NAME = "lesionlens.ModelCard"  # namespace.Name: what KFP / Vertex accept


def _read_json(path: str) -> dict | None:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write(folder: str, card: dict) -> None:
    for name, text in (
        (CARD_JSON, json.dumps(card, indent=2)),
        (CARD_MARKDOWN, render_markdown(card)),
    ):
        path = os.path.join(folder, name)
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)


@tfx.dsl.components.component
def ModelCard(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    card: tfx.dsl.components.OutputArtifact[ModelCardArtifact],
    data_root: tfx.dsl.components.Parameter[str],
    code_version: tfx.dsl.components.Parameter[str],
    intervals: tfx.dsl.components.InputArtifact[MetricIntervals] = None,
    segmentation: tfx.dsl.components.InputArtifact[SegmentationMetrics] = None,
) -> None:
    """`data_root`: the ingestion output (its manifest.json describes the data)."""
    model_dir = path_utils.serving_model_path(model.uri)
    props = pushed_model.mlmd_artifact.custom_properties
    pushed = bool(props["pushed"].int_value) if "pushed" in props else False
    destination = props["pushed_destination"].string_value if pushed else ""
    versions = {
        "tensorflow": tf.__version__,
        "tfx": tfx_package.__version__,
        "lesionlens_modules": code_version,
    }
    content = build_card(
        info=_read_json(os.path.join(model_dir, C.MODEL_INFO)) or {},
        intervals=intervals and _read_json(os.path.join(intervals.uri, INTERVALS_FILE)),
        segmentation=segmentation and _read_json(os.path.join(segmentation.uri, RESULT_FILE)),
        manifest=_read_json(os.path.join(data_root, C.MANIFEST)),
        versions=versions,
        model_version=os.path.basename(destination) if pushed else "not pushed",
    )
    _write(card.uri, content)
    if pushed:
        _write(destination, content)
        log.info("model card written to %s", os.path.join(destination, CARD_MARKDOWN))
    else:
        log.info("model not pushed: model card kept in %s only", card.uri)
