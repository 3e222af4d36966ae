"""TF Serving's model layout, `<base>/<integer version>/saved_model.pb` (what the Pusher
writes), and the newest version, the one TF Serving's default `latest` policy serves: one
home for the dev server, `lesionlens score` and the benches. Local paths and gs:// alike
(tf.io.gfile)."""

from __future__ import annotations

import os

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def is_saved_model(path: str | os.PathLike) -> bool:
    import tensorflow as tf

    return any(tf.io.gfile.exists(os.path.join(path, name)) for name in SAVED_MODEL_FILES)


def model_versions(base: str | os.PathLike) -> dict[int, str]:
    """{version: folder} of the integer-named folders in `base` that hold a SavedModel (a
    half-written push does not); {} when there are none, or no `base`."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(base):
        return {}
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(base))  # gs:// folders end in /
    folders = {int(name): os.path.join(base, name) for name in names if name.isdigit()}
    return {version: path for version, path in folders.items() if is_saved_model(path)}


def newest_version(base: str | os.PathLike) -> str | None:
    """The highest version's folder in `base`, None when it has none."""
    versions = model_versions(base)
    return versions[max(versions)] if versions else None
