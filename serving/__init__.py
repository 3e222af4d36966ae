"""Serving side of LesionLens. What ships to users who query production TF Serving:

- ``serving.client``: ``GrpcClient`` / ``RestClient`` with ``predict_images()``.
- ``serving.overlay``: Grad-CAM upsampling, jet colour map, alpha blend, ROI outline -> PNG.
- ``serving.cli``: ``lesionlens predict``.
- ``serving.rest_json``, ``serving.errors``: TF Serving's REST JSON and error statuses.

``serving.dev`` is the development stand-in server (``lesionlens serve-dev``), not for
production. TensorFlow is only imported where tensors are built; a process that builds
them with the pushed model's Keras 2 calls ``modules.keras2.use_keras2()`` first (the
``lesionlens`` command and ``python -m serving.dev`` do).
"""
