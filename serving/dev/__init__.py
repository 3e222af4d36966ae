"""Development stand-in for tensorflow_model_server (not shipped to production): TF Serving's
gRPC PredictionService / ModelService and REST API answered from a pushed SavedModel.

- ``serving.dev.server``: ``serve()`` starts gRPC + REST on loopback.
- ``serving.dev.model_store``: finds, loads and runs model versions with TF Serving's errors.
- ``serving.dev.cli``: ``serve-dev`` options; ``python -m serving.dev``.
"""
