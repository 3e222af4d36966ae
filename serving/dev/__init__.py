"""Development stand-in for tensorflow_model_server (not shipped to production): TF Serving's
gRPC PredictionService / ModelService and REST API answered from a pushed SavedModel.

- ``serving.dev.server``: ``serve()`` starts gRPC + REST on loopback, polls for newly pushed
  versions and reloads them; ``DevServer.stop()`` ends it all.
- ``serving.dev.grpc_service``: the gRPC services; ``serving.dev.rest``: the REST routes.
- ``serving.dev.admission``: the batch and in-flight limits both front ends apply
  (``serving.dev.limits``: their values, no TensorFlow).
- ``serving.dev.model_store``: finds, loads and runs model versions with TF Serving's errors.
- ``serving.dev.cli``: ``serve-dev`` options; ``python -m serving.dev``.
"""
