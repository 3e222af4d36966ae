"""The Keras 2 switch: tensorflow-transform and the exported model are built with Keras 2
(tf_keras), which TensorFlow picks only when TF_USE_LEGACY_KERAS is set before it is first
imported. Every entry point (the `lesionlens` command, the runners, the report's variants,
the dev server, the benches, the tests) calls `use_keras2()` first; no import sets it."""

from __future__ import annotations

import os
import sys


def use_keras2() -> None:
    """TF_USE_LEGACY_KERAS=1 and TF's C++ logs at warnings and above (TF_CPP_MIN_LOG_LEVEL=2),
    unless the environment says otherwise; RuntimeError when TensorFlow is already imported
    without Keras 2 (the switch would come too late)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules and os.environ["TF_USE_LEGACY_KERAS"] != "1":
        raise RuntimeError("TensorFlow was imported before use_keras2(): call it first")
