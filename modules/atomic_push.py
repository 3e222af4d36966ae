"""Pusher executor that makes a new model version appear all at once.

Why: TFX's Pusher copies the SavedModel file by file straight into
`<base>/<version>/` (saved_model.pb last). TF Serving polls `<base>` for integer folders, so
it can see a version while it is still being written, and a push killed half-way leaves a
broken highest version that TF Serving keeps trying to load. Here the stock executor writes
into a staging folder beside the versions (`<base>/.staging-<id>`: not an integer, so TF
Serving ignores it), and the finished folder is renamed to `<base>/<version>` in one step.
On a local or POSIX filesystem the rename is atomic; on object stores (gs://) it is a copy,
and the stock order (saved_model.pb last) is what remains.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from typing import Any

from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

log = logging.getLogger(__name__)
STAGING_PREFIX = ".staging-"


class Executor(pusher_executor.Executor):
    """The stock Pusher into a staging folder, then one rename into the versions folder."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        key = standard_component_specs.PUSH_DESTINATION_KEY
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[key], destination)
        base = destination.filesystem.base_directory
        _remove_stale_staging(base)
        staging = os.path.join(base, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        destination.filesystem.base_directory = staging
        staged = {**exec_properties, key: proto_utils.proto_to_json(destination)}
        try:
            super().Do(input_dict, output_dict, staged)
            pushed = artifact_utils.get_single_instance(
                output_dict[standard_component_specs.PUSHED_MODEL_KEY]
            )
            if pushed.get_int_custom_property("pushed"):
                staged_version = pushed.get_string_custom_property("pushed_version")
                version = int(staged_version)
                final = os.path.join(base, str(version))
                while fileio.exists(final):  # two pushes within one second
                    version += 1
                    final = os.path.join(base, str(version))
                fileio.rename(os.path.join(staging, staged_version), final)
                pushed.set_string_custom_property("pushed_destination", final)
                pushed.set_string_custom_property("pushed_version", str(version))
                log.info("model version %d pushed to %s", version, final)
        finally:
            if fileio.exists(staging):
                fileio.rmtree(staging)


def _remove_stale_staging(base: str, older_than_s: float = 3600) -> None:
    """A push killed mid-copy leaves its staging folder (ignored by TF Serving); a push takes
    seconds, so local ones older than an hour are removed."""
    if "://" in base or not os.path.isdir(base):
        return
    now = time.time()
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if name.startswith(STAGING_PREFIX) and now - os.path.getmtime(path) > older_than_s:
            log.info("removing %s, left by an interrupted push", path)
            shutil.rmtree(path, ignore_errors=True)
