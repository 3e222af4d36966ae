"""Serving side of LesionLens. What ships to users who query production TF Serving:

- ``serving.client``: ``GrpcClient`` / ``RestClient`` with ``predict_images()``.
- ``serving.overlay``: Grad-CAM upsampling, jet colour map, alpha blend, ROI outline -> PNG.
- ``serving.cli``: ``lesionlens predict``.
- ``serving.rest_json``, ``serving.errors``: TF Serving's REST JSON and error statuses.

``serving.dev`` is the development stand-in server (``lesionlens serve-dev``), not for
production. TensorFlow is only imported where tensors are built.
"""

from __future__ import annotations

import os

# The pushed model is built with Keras 2 (tf_keras); keep every process that imports this
# package on the same Keras before TensorFlow is first imported (see DESIGN-BRIEF).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
