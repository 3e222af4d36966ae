"""`create_pipeline`: wires the components and nothing else (the ML code is in modules/).

The metadata store and the Beam options come from the runner (local_runner.py supplies
sqlite and DirectRunner; kubeflow_v2_runner.py none, Vertex AI's own MLMD, and Dataflow),
as in TFX's templates.
"""

from __future__ import annotations

import dataclasses
import json

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.version import __version__ as TFX_VERSION

from modules import atomic_push
from modules import contract as C
from modules.anomalies_gate import AnomaliesGate
from modules.intervals import BootstrapIntervals
from modules.model_card.component import ModelCard
from modules.options import (
    Architecture,
    SegmenterOptions,
    TrainerOptions,
    TrainRoi,
    TransformOptions,
)
from modules.segmenter.evaluation import SegmenterEvaluation
from modules.segmenter.predicted_roi import PredictedRoi
from modules.smote import Smote
from pipeline.config import PipelineConfig, recipe_options
from pipeline.eval_config import build_eval_config
from pipeline.fingerprint import code_fingerprint
from schema import schema_path

# The project code each step runs (a `module.function` path or a component): its fingerprint
# is the step's cache key on code (pipeline/fingerprint.py).
PREPROCESSING_FN = "modules.transform.preprocessing_fn"
TRAINER_FN = "modules.trainer.run_fn"
SEGMENTER_FN = "modules.segmenter.trainer.run_fn"
_CODE_ENTRIES = (PREPROCESSING_FN, TRAINER_FN, SEGMENTER_FN, Smote, PredictedRoi)
_CODE_ENTRIES += (SegmenterEvaluation, BootstrapIntervals, ModelCard)


def _module(entry) -> str:
    return entry.rpartition(".")[0] if isinstance(entry, str) else entry.__module__


def code_version(entry) -> str:
    """Fingerprint of the project modules that `entry` runs (a `module.function` path or a
    component class): an edit elsewhere leaves this step cached."""
    return code_fingerprint(_module(entry))


def run_code_version() -> str:
    """Fingerprint of all the project code a run executes (recorded in the model card)."""
    return code_fingerprint(*sorted({_module(e) for e in _CODE_ENTRIES}))


def create_pipeline(
    cfg: PipelineConfig,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
    beam_pipeline_args: list[str],
    schema_file: str | None = None,
) -> tfx.dsl.Pipeline:
    """`schema_file`: the curated schema as the executors will read it (default: this
    installation's copy; a container-based runner passes the path inside its image)."""
    example_gen = tfx.components.ImportExampleGen(
        input_base=cfg.data_root,
        input_config=tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name=s, pattern=f"{s}/{C.SHARD_GLOB}") for s in C.SPLITS]
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file or schema_path())
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=dataclasses.asdict(
            TransformOptions(
                image_size=cfg.image_size,
                roi=cfg.roi,
                roi_mode=cfg.roi_mode.value,
                roi_margin=cfg.roi_margin,
                segmenter_size=cfg.active_segmenter_size,
                max_pixels=cfg.max_image_pixels,
                code=code_version(PREPROCESSING_FN),
            )
        ),
        splits_config=tfx.proto.SplitsConfig(analyze=[C.TRAIN], transform=list(C.SPLITS)),
        disable_statistics=True,
    )
    transform.add_upstream_node(anomalies_gate)
    transformed = transform.outputs["transformed_examples"]
    segmenter = _segmenter(cfg, transformed)
    if segmenter and segmenter.roi_examples:
        transformed = segmenter.roi_examples
    smote = Smote(
        examples=transformed,
        method=cfg.smote,
        k_neighbors=cfg.smote_k_neighbors,
        seed=cfg.seed,
        target_ratio=cfg.smote_target_ratio,
        max_memory_gb=cfg.smote_max_memory_gb,
        resample_splits=(C.TRAIN,),
        code_version=code_version(Smote),
    )
    trainer = tfx.components.Trainer(
        run_fn=TRAINER_FN,
        examples=smote.outputs["resampled_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[C.TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[C.EVAL]),
        custom_config=dataclasses.asdict(trainer_options(cfg, code_version(TRAINER_FN))),
        base_model=segmenter.model if segmenter else None,
    )
    if segmenter:  # the segmenter's test Dice gate runs first
        trainer.add_upstream_node(segmenter.evaluation)
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        example_splits=[C.TEST],
        eval_config=build_eval_config(cfg),
    )
    intervals = BootstrapIntervals(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        split=C.TEST,
        slice_features=json.dumps(list(cfg.slice_features)),
        resamples=cfg.interval_resamples,
        level=cfg.interval_level,
        seed=cfg.seed,
        code_version=code_version(BootstrapIntervals),
    )
    pusher = tfx.components.Pusher(
        custom_executor_spec=executor_spec.ExecutorClassSpec(atomic_push.Executor),
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=f"{cfg.serving_root}/{cfg.model_name}"
            )
        ),
    )
    lesion_map_evaluation = None
    if cfg.architecture is Architecture.JOINT:  # its own lesion map, scored and gated
        lesion_map_evaluation = _mask_evaluation(
            cfg, transform.outputs["transformed_examples"], trainer.outputs["model"]
        ).with_id("lesion_map_evaluation")
        pusher.add_upstream_node(lesion_map_evaluation)
    segmentation = segmenter.evaluation if segmenter else lesion_map_evaluation
    model_card = ModelCard(
        model=trainer.outputs["model"],
        pushed_model=pusher.outputs["pushed_model"],
        data_root=cfg.data_root,
        # the card records the whole run's code; it reruns whenever any step does anyway
        code_version=run_code_version(),
        intervals=intervals.outputs["intervals"] if cfg.confidence_intervals else None,
        segmentation=segmentation.outputs["evaluation"] if segmentation else None,
    )
    components = [
        example_gen,
        statistics_gen,
        schema_gen,
        example_validator,
        anomalies_gate,
        transform,
        *(segmenter.components if segmenter else []),
        smote,
        trainer,
        *([lesion_map_evaluation] if lesion_map_evaluation else []),
        model_resolver,
        evaluator,
        pusher,
        model_card,
    ]
    if cfg.confidence_intervals:
        components.append(intervals)
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=cfg.pipeline_root,
        components=components,
        enable_cache=cfg.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args,
    )


def trainer_options(cfg: PipelineConfig, code: str) -> TrainerOptions:
    """The classifier Trainer's options (also what bench/recipe.py trains with)."""
    return TrainerOptions(
        image_size=cfg.image_size,
        roi=cfg.roi,
        roi_mode=cfg.roi_mode.value,
        roi_margin=cfg.roi_margin,
        max_pixels=cfg.max_image_pixels,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        classes=list(cfg.classes),
        backbone=cfg.backbone,
        weights=cfg.weights,
        recipe=recipe_options(cfg),
        seed=cfg.seed,
        calibrate=cfg.calibrate,
        operating_point=cfg.operating_point.value,
        operating_target=cfg.operating_target,
        threshold_method=cfg.threshold_method,
        mirror_tta=cfg.mirror_tta,
        train_roi=cfg.train_roi.value,
        segmenter_size=cfg.active_segmenter_size,
        **_roi_postprocess(cfg),
        architecture=cfg.architecture.value,
        mask_loss_weight=cfg.mask_loss_weight,
        code=code,
    )


def _roi_postprocess(cfg: PipelineConfig) -> dict:
    return {
        "roi_threshold": cfg.roi_threshold,
        "roi_dilation": cfg.roi_dilation,
        "roi_min_area": cfg.roi_min_area,
        "roi_max_area": cfg.roi_max_area,
    }


def _mask_evaluation(cfg: PipelineConfig, transformed, model) -> SegmenterEvaluation:
    """Test Dice / IoU of a lesion map and its gate: the segmenter's (two-stage) or the
    joint network's own (its Trainer's model)."""
    return SegmenterEvaluation(
        examples=transformed,
        segmenter=model,
        split=C.TEST,
        image_size=cfg.image_size,
        min_dice=cfg.min_dice,
        slice_features=json.dumps(["label", "dataset"]),
        resamples=cfg.interval_resamples,
        level=cfg.interval_level,
        seed=cfg.seed,
        code_version=code_version(SegmenterEvaluation),
        **_roi_postprocess(cfg),
    )


@dataclasses.dataclass
class _Segmenter:
    """The segmenter's part of the pipeline: its nodes, its model and its test evaluation."""

    components: list
    model: object  # channel of the segmenter Model
    evaluation: object  # SegmenterEvaluation (also the classifier's Dice gate)
    roi_examples: object | None  # examples with the segmenter's ROI (train_roi=predicted)


def _segmenter(cfg: PipelineConfig, transformed) -> _Segmenter | None:
    """The segmenter, trained here or imported (`segmenter_model`), its test-split
    evaluation and gate, and (train_roi=predicted) PredictedRoi; None with ROI off."""
    if not cfg.roi:
        return None
    if cfg.segmenter_model:
        source = tfx.dsl.Importer(
            source_uri=cfg.segmenter_model,
            artifact_type=tfx.types.standard_artifacts.Model,
            # the Trainer reads a Model without a TFX version from the pre-1.0 layout
            custom_properties={"tfx_version": TFX_VERSION},
        ).with_id("segmenter_importer")
        model = source.outputs["result"]
    else:
        source = tfx.components.Trainer(
            run_fn=SEGMENTER_FN,
            examples=transformed,
            train_args=tfx.proto.TrainArgs(splits=[C.TRAIN]),
            eval_args=tfx.proto.EvalArgs(splits=[C.EVAL]),
            custom_config=dataclasses.asdict(
                SegmenterOptions(
                    image_size=cfg.image_size,
                    segmenter_size=cfg.segmenter_size,
                    width=cfg.segmenter_width,
                    encoder=cfg.segmenter_encoder,
                    encoder_weights=cfg.segmenter_encoder_weights,
                    batch_size=cfg.batch_size,
                    epochs=cfg.segmenter_epochs,
                    learning_rate=cfg.segmenter_learning_rate,
                    seed=cfg.seed,
                    code=code_version(SEGMENTER_FN),
                )
            ),
        ).with_id("segmenter_trainer")
        model = source.outputs["model"]
    evaluation = _mask_evaluation(cfg, transformed, model).with_id("segmenter_evaluation")
    components = [source, evaluation]
    roi_examples = None
    if cfg.train_roi is TrainRoi.PREDICTED:
        predicted = PredictedRoi(
            examples=transformed,
            segmenter=model,
            image_size=cfg.image_size,
            roi_mode=cfg.roi_mode.value,
            roi_margin=cfg.roi_margin,
            code_version=code_version(PredictedRoi),
            **_roi_postprocess(cfg),
        )
        components.append(predicted)
        roi_examples = predicted.outputs["roi_examples"]
    return _Segmenter(components, model, evaluation, roi_examples)
