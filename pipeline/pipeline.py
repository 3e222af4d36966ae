"""`create_pipeline`: wires the components and nothing else (the ML code is in modules/)."""

from __future__ import annotations

from tfx import v1 as tfx

from modules.anomalies_gate import AnomaliesGate
from modules.smote import Smote
from pipeline.config import SCHEMA_PATH, PipelineConfig, modules_fingerprint
from pipeline.eval_config import build_eval_config

SPLITS = ("train", "eval", "test")


def create_pipeline(cfg: PipelineConfig) -> tfx.dsl.Pipeline:
    code = modules_fingerprint()
    example_gen = tfx.components.ImportExampleGen(
        input_base=cfg.data_root,
        input_config=tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name=s, pattern=f"{s}/*.tfrecord.gz") for s in SPLITS]
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=SCHEMA_PATH)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="modules.transform.preprocessing_fn",
        custom_config={"image_size": cfg.image_size, "roi": cfg.roi, "code": code},
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=list(SPLITS)),
        disable_statistics=True,
    )
    transform.add_upstream_node(anomalies_gate)
    smote = Smote(
        examples=transform.outputs["transformed_examples"],
        method=cfg.smote,
        k_neighbors=cfg.smote_k_neighbors,
        seed=cfg.seed,
        target_ratio=cfg.smote_target_ratio,
        max_memory_gb=cfg.smote_max_memory_gb,
        code_version=code,
    )
    trainer = tfx.components.Trainer(
        run_fn="modules.trainer.run_fn",
        examples=smote.outputs["resampled_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={
            "image_size": cfg.image_size,
            "roi": cfg.roi,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "learning_rate": cfg.learning_rate,
            "classes": list(cfg.classes),
            "weights": cfg.weights,
            "seed": cfg.seed,
            "code": code,
        },
    )
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        example_splits=["test"],
        eval_config=build_eval_config(cfg),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=f"{cfg.serving_root}/{cfg.model_name}"
            )
        ),
    )
    components = [
        example_gen,
        statistics_gen,
        schema_gen,
        example_validator,
        anomalies_gate,
        transform,
        smote,
        trainer,
        model_resolver,
        evaluator,
        pusher,
    ]
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=cfg.pipeline_root,
        components=components,
        enable_cache=cfg.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            cfg.metadata_path
        ),
        beam_pipeline_args=list(cfg.beam_args),
    )
