"""Serving side of LesionLens: a TF Serving-compatible dev server, clients, Grad-CAM overlays.

Modules (each importable on its own; TensorFlow is only imported where tensors are built):

- ``serving.dev_server``: local server speaking TF Serving's gRPC PredictionService/ModelService
  and REST API, answering from a pushed SavedModel (``serve()``; ``python -m serving.dev_server``).
- ``serving.client``: ``GrpcClient`` / ``RestClient`` with ``predict_images()``.
- ``serving.overlay``: Grad-CAM upsampling, jet colour map, alpha blend -> PNG.
- ``serving.cli``: ``add_cli(subparsers)`` registering ``predict`` and ``serve-dev``.
"""

from __future__ import annotations

import os

# The pushed model is built with Keras 2 (tf_keras); keep every process that imports this
# package on the same Keras before TensorFlow is first imported (see DESIGN-BRIEF).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
