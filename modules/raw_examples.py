"""Building the raw tf.Example of the contract (modules/contract.py): serialized examples
from image and mask bytes, and the same example with its mask emptied (a request without the
radiologist's mask). TensorFlow's protos are imported on first use.
"""

from __future__ import annotations

from modules import contract as C


def build_raw_example(
    image: bytes,
    mask: bytes = b"",
    *,
    label: int | None = None,
    modality: str | bytes = "",
    dataset: str | bytes = "",
    image_id: str | bytes = "",
    group_id: str | bytes = "",
) -> bytes:
    """A serialized raw tf.Example of the contract. `label` is left out when None (unknown at
    inference; the serving signatures do not need it)."""
    from tensorflow.core.example import example_pb2, feature_pb2

    def b(value: str | bytes) -> feature_pb2.Feature:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[raw]))

    feats = {
        C.IMAGE: b(image),
        C.MASK: b(mask or b""),
        C.MODALITY: b(modality),
        C.DATASET: b(dataset),
        C.IMAGE_ID: b(image_id),
        C.GROUP_ID: b(group_id),
    }
    if label is not None:
        feats[C.LABEL] = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(label)]))
    example = example_pb2.Example(features=feature_pb2.Features(feature=feats))
    return example.SerializeToString(deterministic=True)  # same bytes in every process


def without_mask(record: bytes) -> bytes:
    """A serialized raw Example with its mask emptied: what a client without the
    radiologist's mask sends."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(record)
    example.features.feature[C.MASK].bytes_list.value[:] = [b""]
    return example.SerializeToString()
