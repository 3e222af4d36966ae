"""Component spec: Examples in, Examples out (same split names), resampling parameters."""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from modules.options import SmoteMethod
from modules.smote.executor import Executor


class SmoteSpec(types.ComponentSpec):
    PARAMETERS = {
        "method": ExecutionParameter(type=str),  # a SmoteMethod value
        "k_neighbors": ExecutionParameter(type=int),
        "seed": ExecutionParameter(type=int),
        "target_ratio": ExecutionParameter(type=float),  # minority / majority after resampling
        "max_memory_gb": ExecutionParameter(type=float),
        "resample_splits": ExecutionParameter(type=str),  # JSON list of split names
        "code_version": ExecutionParameter(type=str),  # part of the cache key
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {"resampled_examples": ChannelParameter(type=standard_artifacts.Examples)}


class Smote(base_component.BaseComponent):
    """Oversamples minority classes of the train split with imbalanced-learn's SMOTE.

    Memory: float32 pixels, originals plus imbalanced-learn's stacked output, about
    4 * S * S * 3 * (2N + new) bytes (BUSI paper protocol at 299: ~1.1 GB). Past
    `max_memory_gb` the component fails with a message instead of swapping; at 10x BUSI
    (~11 GB) raise it or lower image_size.
    """

    SPEC_CLASS = SmoteSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        *,
        method: SmoteMethod,
        k_neighbors: int,
        seed: int,
        target_ratio: float,
        max_memory_gb: float,
        resample_splits: tuple[str, ...],
        code_version: str,
    ):
        spec = SmoteSpec(
            examples=examples,
            method=SmoteMethod(method).value,  # an unknown method fails when the pipeline is built
            k_neighbors=k_neighbors,
            seed=seed,
            target_ratio=target_ratio,
            max_memory_gb=max_memory_gb,
            resample_splits=json.dumps(list(resample_splits)),
            code_version=code_version,
            resampled_examples=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)
