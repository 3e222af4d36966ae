"""The raw-example contract (modules/contract.py) against the curated schema that
ExampleValidator checks every split with, and the one parser of every `--classes` flag."""

import argparse

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from modules import contract as C
from schema import schema_path

SCHEMA_TYPES = {"bytes_list": schema_pb2.BYTES, "int64_list": schema_pb2.INT}


def test_schema_holds_exactly_the_contracts_raw_features():
    with open(schema_path()) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    features = {f.name: f for f in schema.feature}
    assert {name: f.type for name, f in features.items()} == {
        name: SCHEMA_TYPES[kind] for name, kind in C.RAW_FEATURES.items()
    }
    for name, feature in features.items():  # one value in every example, as ingest writes
        assert feature.presence.min_fraction == 1.0, name
        assert [d.size for d in feature.shape.dim] == [1], name
    label = features[C.LABEL].int_domain
    assert (label.min, label.max) == (0, max(C.LABELS.values()))
    [modality] = [d for d in schema.string_domain if d.name == features[C.MODALITY].domain]
    assert set(modality.value) == set(C.LAYOUT_MODALITY.values())


@pytest.mark.parametrize(
    "text, classes",
    [
        ("benign,malignant", ("benign", "malignant")),
        (" Malignant , BENIGN,normal ", ("benign", "malignant", "normal")),  # by label id
        ("sick,healthy", ("healthy", "sick")),
    ],
)
def test_class_lists_are_parsed_one_way(text, classes):
    assert C.parse_classes(text) == classes


@pytest.mark.parametrize("text", ["benign", "benign,normal", "benign,tumour", "", "benign,benign"])
def test_class_lists_that_name_no_model_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="use benign,malignant"):
        C.parse_classes(text)
