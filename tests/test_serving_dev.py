"""The dev server, clients, overlays and CLI against a toy model with the real signatures.

Everything goes over real sockets on 127.0.0.1 (free ports). Empty batches, documented:
`predict_images([])` raises ValueError without a request; the server refuses an empty batch
with INVALID_ARGUMENT before the model runs (gRPC and REST's columnar "inputs"), so the answer
does not depend on how the CPU's kernels treat zero examples; a REST body with
``"instances": []`` is rejected as TF Serving rejects it.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import start_dev_server
from PIL import Image
from serving_toy_model import FEATURE, save_toy_model
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from modules import contract as C
from modules.raw_examples import build_raw_example
from serving import audit, overlay
from serving.cli import add_cli
from serving.client import GrpcClient, RestClient
from serving.dev.limits import Limits
from serving.dev.model_store import clean_tf_message
from serving.dev.server import serve
from serving.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ServerUnavailableError,
    ServingError,
    SignatureNotFoundError,
)

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"a_rgb.png": (40, 30), "b_grey.jpg": (25, 50), "c_wide.png": (400, 8)}
ROI = C.ROI_MASK_SIZE


def _image_bytes(width: int, height: int, seed: int = 0, fmt: str = "PNG", mode: str = "RGB"):
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _mask_bytes(width: int, height: int) -> bytes:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> Path:
    """models/toy/{1,2}: the server must answer from version 2, the highest."""
    base = tmp_path_factory.mktemp("models") / "toy"
    save_toy_model(base, version=1, seed=7)
    save_toy_model(base, version=2, seed=8)
    (base / "tmp-export").mkdir()  # not an integer: ignored, as by TF Serving
    return base


@pytest.fixture(scope="module")
def server(model_base):
    with serve(model_base, "toy", port=0, rest_port=0, version_labels={"stable": 2}) as handle:
        yield handle


@pytest.fixture(scope="module")
def direct(model_base):
    """The served version loaded in-process: the reference every response is compared with."""
    return tf.saved_model.load(str(model_base / "2"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    (folder / "a_rgb.png").write_bytes(_image_bytes(40, 30, seed=1))
    (folder / "b_grey.jpg").write_bytes(_image_bytes(25, 50, seed=2, fmt="JPEG", mode="L"))
    (folder / "c_wide.png").write_bytes(_image_bytes(400, 8, seed=3))
    (folder / "a_rgb_mask.png").write_bytes(_mask_bytes(40, 30))  # skipped as input
    return folder


@pytest.fixture
def closed_port():
    """A port bound for the whole test but not listening: connections are refused, and no
    other process can take it meanwhile (a port closed before use could be reused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _raw_predict(target: str, inputs: dict, model="toy", signature="predict_images", **spec):
    """A hand-built PredictRequest; returns the response or the RpcError."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return stub.Predict(request, timeout=20)
        except grpc.RpcError as error:
            return error


def _http(url: str, body: dict | bytes | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _direct_images(direct, images: list[bytes], masks: list[bytes] | None = None) -> dict:
    masks = masks or [b""] * len(images)
    out = direct.signatures["predict_images"](
        image_bytes=tf.constant(images), mask_bytes=tf.constant(masks)
    )
    return {name: value.numpy() for name, value in out.items()}


def _assert_outputs_equal(got: dict, expected: dict) -> None:
    """Same output names, dtypes and values (numbers to 1e-6, strings exactly)."""
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        if want.dtype == object:
            assert got[name].tolist() == want.tolist(), name
        else:
            np.testing.assert_allclose(got[name], want, atol=1e-6, err_msg=name)


def _good_inputs() -> dict:
    return {"image_bytes": [_image_bytes(20, 20)], "mask_bytes": [b""]}


def _rest_inputs(images: list[bytes]) -> dict:
    """TF Serving's columnar REST inputs, bytes as {"b64": ...}."""

    def b64(data: bytes) -> dict:
        return {"b64": base64.b64encode(data).decode()}

    return {"image_bytes": [b64(i) for i in images], "mask_bytes": [b64(b"") for _ in images]}


# --- gRPC -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_grpc_predict_matches_direct_call(server, direct, batch):
    images = [_image_bytes(30 + 7 * i, 20 + 3 * i, seed=i) for i in range(batch)]
    masks = [_mask_bytes(30 + 7 * i, 20 + 3 * i) if i == 1 else b"" for i in range(batch)]
    with GrpcClient(server.grpc_target, "toy", signature="predict_images") as client:
        out = client.predict_images(images, masks)
        assert client.last_model_spec.version.value == 2  # highest version on disk
    expected = _direct_images(direct, images, masks)
    assert out["probabilities"].shape == (batch, 2) and out["probabilities"].dtype == np.float32
    assert out["class_id"].shape == (batch,) and out["class_id"].dtype == np.int64
    assert out["gradcam"].shape == (batch, FEATURE, FEATURE)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-6)
    assert out["gradcam"].min() >= 0.0 and out["gradcam"].max() <= 1.0
    assert out["roi_source"].tolist() == [b"given" if i == 1 else b"none" for i in range(batch)]
    assert out["roi_mask"].shape == (batch, ROI, ROI) and out["roi_mask"].dtype == np.uint8
    _assert_outputs_equal(out, expected)


def test_serving_default_examples_and_version_label(server, direct):
    images = [_image_bytes(33, 21, seed=4), _image_bytes(400, 8, seed=5)]
    expected = _direct_images(direct, images)
    with GrpcClient(server.grpc_target, "toy", version_label="stable") as client:
        out = client.predict_images(images, image_ids=["x.png", "y.png"])  # serving_default
    _assert_outputs_equal(out, expected)
    with GrpcClient(server.grpc_target, "toy", signature="predict_only") as client:
        out = client.predict_images(images)
    assert set(out) == {"probabilities", "class_id", "roi_source", "roi_mask"}


def test_predict_no_mask_ignores_request_masks(server, direct):
    """The deployable signature: masks in the Examples are ignored, on both transports."""
    images = [_image_bytes(30, 20, seed=11), _image_bytes(25, 25, seed=12)]
    masks = [_mask_bytes(30, 20), _mask_bytes(25, 25)]
    no_mask = _direct_images(direct, images)
    with_mask = _direct_images(direct, images, masks)
    assert with_mask["roi_source"].tolist() == [b"given", b"given"]
    for client in (
        GrpcClient(server.grpc_target, "toy", signature="predict_no_mask"),
        RestClient(server.rest_url, "toy", signature="predict_no_mask"),
    ):
        out = client.predict_images(images, masks)
        assert set(out) == {"probabilities", "class_id", "roi_source", "roi_mask"}
        assert out["roi_source"].tolist() == [b"none", b"none"]
        assert out["roi_mask"].dtype == np.uint8 and out["roi_mask"].shape == (2, ROI, ROI)
        assert out["roi_mask"].all()
        np.testing.assert_allclose(out["probabilities"], no_mask["probabilities"], atol=1e-6)
        client.close()


def test_grpc_metadata_and_status(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "toy"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.GetModelMetadata(request, timeout=10)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        inputs = signatures.signature_def["predict_images"].inputs
        assert set(inputs) == {"image_bytes", "mask_bytes"}
        assert response.model_spec.version.value == 2

        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "toy"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            status_request, timeout=10
        )
        [entry] = status.model_version_status
        assert entry.version == 2
        assert entry.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


# --- REST -------------------------------------------------------------------------------


def test_rest_matches_grpc(server):
    images = [_image_bytes(30, 20, seed=9), _image_bytes(400, 8, seed=10)]
    with GrpcClient(server.grpc_target, "toy", signature="predict_images") as client:
        via_grpc = client.predict_images(images)
    for signature in ("predict_images", "serving_default"):
        rest = RestClient(server.rest_url, "toy", signature=signature).predict_images(images)
        _assert_outputs_equal(rest, via_grpc)  # roi_source: bytes, roi_mask: uint8, on both
    masks = [_mask_bytes(30, 20), b""]
    with GrpcClient(server.grpc_target, "toy", signature="serving_default") as client:
        masked = client.predict_images(images, masks)
    rest = RestClient(server.rest_url, "toy", signature="serving_default")
    _assert_outputs_equal(rest.predict_images(images, masks), masked)
    assert masked["roi_source"].tolist() == [b"given", b"none"]

    # Row format, as a curl user would send it: one object per instance, bytes as {"b64"}.
    instances = [
        {"image_bytes": {"b64": base64.b64encode(image).decode()}, "mask_bytes": ""}
        for image in images
    ]
    url = f"{server.rest_url}/v1/models/toy/labels/stable:predict"
    status, doc = _http(url, {"signature_name": "predict_images", "instances": instances})
    assert status == 200, doc
    assert [row["class_id"] for row in doc["predictions"]] == via_grpc["class_id"].tolist()
    assert [row["roi_source"] for row in doc["predictions"]] == ["none", "none"]  # JSON text
    assert np.array([row["roi_mask"] for row in doc["predictions"]]).shape == (2, ROI, ROI)
    np.testing.assert_allclose(
        [row["probabilities"] for row in doc["predictions"]], via_grpc["probabilities"], atol=1e-6
    )


def test_rest_status_metadata_and_errors(server):
    base = f"{server.rest_url}/v1/models"
    status, doc = _http(f"{base}/toy")
    assert status == 200
    assert doc == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert _http(f"{base}/toy/versions/1") == (
        404,
        {"error": "Could not find version 1 of model toy"},
    )
    status, doc = _http(f"{base}/toy/metadata")
    assert status == 200 and "predict_images" in doc["metadata"]["signature_def"]["signature_def"]

    assert _http(f"{base}/nope:predict", {"instances": [1]}) == (
        404,
        {"error": "Servable not found for request: Latest(nope)"},
    )
    status, doc = _http(f"{base}/toy:predict", {"signature_name": "nah", "instances": [1]})
    assert status == 400
    assert doc["error"] == 'Serving signature name: "nah" not found in signature def'
    status, doc = _http(f"{base}/toy:predict", b"{not json")
    assert status == 400 and doc["error"].startswith("JSON Parse error")
    status, doc = _http(f"{base}/toy:explode", {"instances": [1]})
    assert status == 400 and doc["error"].startswith("Malformed request: POST")
    status, doc = _http(f"{base}/toy:predict", {"instances": []})
    assert status == 400 and "No values in 'instances' array" in doc["error"]
    bad = {"signature_name": "predict_images", "inputs": {"image_bytes": ["x"], "mask_bytes": [""]}}
    status, doc = _http(f"{base}/toy:predict", bad)
    assert status == 400 and doc["error"].startswith("Unknown image file format")


# --- errors -----------------------------------------------------------------------------


def test_unreachable_server_raises_and_cli_exits_2(images, capsys, closed_port):
    port = closed_port
    with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port}"):
        GrpcClient(f"127.0.0.1:{port}", "toy", timeout_s=5).predict_images([b"x"])
    with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port}"):
        RestClient(f"127.0.0.1:{port}", "toy", timeout_s=5).predict_images([b"x"])
    for extra in ([], ["--rest"]):
        argv = ["predict", "--server", f"127.0.0.1:{port}", "--model", "toy", *extra]
        code = _run_cli([*argv, "--timeout", "5", str(images / "a_rgb.png")])
        err = capsys.readouterr().err
        assert code == 2
        assert "cannot reach the model server" in err and f"127.0.0.1:{port}" in err
        assert err.count("\n") == 1  # one clear line, no traceback


def test_unknown_model_and_version(server, images, capsys):
    error = _raw_predict(server.grpc_target, _good_inputs(), model="nope")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"
    error = _raw_predict(server.grpc_target, _good_inputs(), version=1)  # not the latest: unloaded
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(toy, 1)"
    with pytest.raises(ModelNotFoundError, match="model 'nope'"):
        GrpcClient(server.grpc_target, "nope").predict_images([b"x"])
    with pytest.raises(ModelNotFoundError, match="Unrecognized servable version label: canary"):
        GrpcClient(server.grpc_target, "toy", version_label="canary").predict_images([b"x"])

    code = _run_cli(
        ["predict", "--server", server.grpc_target, "--model", "nope", str(images / "a_rgb.png")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "model not found" in err and "Latest(nope)" in err


def test_unknown_signature(server):
    error = _raw_predict(server.grpc_target, _good_inputs(), signature="nah")
    # TF Serving's predict_util.cc answers FAILED_PRECONDITION here (REST: INVALID_ARGUMENT).
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "nah" not found.'
    for client in (
        GrpcClient(server.grpc_target, "toy", signature="nah", input_format="images"),
        RestClient(server.rest_url, "toy", signature="nah", input_format="images"),
    ):
        with pytest.raises(SignatureNotFoundError, match="signature 'nah'"):
            client.predict_images([_image_bytes(8, 8)])


def test_missing_extra_and_mistyped_inputs(server):
    target = server.grpc_target
    error = _raw_predict(target, {"image_bytes": [_image_bytes(8, 8)]})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "input size does not match signature: 1!=2 len({image_bytes}) != "
        "len({image_bytes,mask_bytes}). Sent extra: {}. Missing but required: {mask_bytes}."
    )
    error = _raw_predict(target, {**_good_inputs(), "foo": [b""]})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {foo}. Missing but required: {}." in error.details()
    error = _raw_predict(target, {"image_bytes": [_image_bytes(8, 8)], "foo": [b""]})
    assert error.details().startswith("input tensor alias not found in signature: foo.")
    error = _raw_predict(target, {"image_bytes": [1.0], "mask_bytes": [b""]})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be string but float is provided" in error.details()


def test_bad_image_bytes_then_server_still_answers(server):
    error = _raw_predict(
        server.grpc_target, {"image_bytes": [b"not an image"], "mask_bytes": [b""]}
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("Unknown image file format")
    assert "Graph execution error" not in error.details()
    with pytest.raises(InvalidRequestError, match="signature 'predict_images'"):
        GrpcClient(server.grpc_target, "toy", signature="predict_images").predict_images([b"?"])
    response = _raw_predict(server.grpc_target, _good_inputs())
    assert not isinstance(response, grpc.RpcError)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1, 2)


def test_empty_batch(server):
    with pytest.raises(ValueError, match="at least one image"):
        GrpcClient(server.grpc_target, "toy").predict_images([])
    empty = np.array([], dtype=object)
    error = _raw_predict(server.grpc_target, {"image_bytes": empty, "mask_bytes": empty})
    assert isinstance(error, grpc.RpcError), "an empty batch must be refused, not answered"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input image_bytes: an empty batch" in error.details()
    assert not isinstance(_raw_predict(server.grpc_target, _good_inputs()), grpc.RpcError)


def test_empty_batch_over_rest(server):
    body = {"signature_name": "predict_images", "inputs": {"image_bytes": [], "mask_bytes": []}}
    status, doc = _http(f"{server.rest_url}/v1/models/toy:predict", body)
    assert status == 400 and "input image_bytes: an empty batch" in doc["error"], doc


def test_clean_tf_message():
    raw = (
        "Graph execution error:\n\nDetected at node X defined at (most recent call last):\n"
        "<stack traces unavailable>\nBad thing.\n\t [[{{node X}}]] [Op:__inference_f_12]"
    )
    assert clean_tf_message(raw) == "Bad thing.\n\t [[{{node X}}]]"


def test_serve_dev_cli_subprocess(model_base, tmp_path):
    """``python -m serving.dev`` on a version dir: prints addresses, serves, stops on ^C."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = ["-m", "serving.dev", "--model-dir", str(model_base / "1")]
    journal = tmp_path / "audit.jsonl"
    argv += ["--audit-log", str(journal)]
    proc, seen = start_dev_server([*argv, "--port", "0", "--rest-port", "0"], env, ROOT)
    try:
        assert seen[0].startswith("Serving model 'toy' version 1")
        target = next(line.split()[-1] for line in seen if line.startswith("gRPC:"))
        rest = next(line.split()[-1] for line in seen if line.startswith("REST:"))
        assert f"audit log: {journal}" in seen
        with GrpcClient(target, "toy", signature="predict_images") as client:
            out = client.predict_images([_image_bytes(12, 12)])
        assert out["probabilities"].shape == (1, 2)
        assert _http(rest)[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
        (line,) = [json.loads(x) for x in journal.read_text().splitlines()]
        assert (line["model"], line["version"], line["outcome"]) == ("toy", 1, "OK")
        assert line["images"][0]["sha256"] == hashlib.sha256(_image_bytes(12, 12)).hexdigest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- overlay ----------------------------------------------------------------------------


def test_overlay_upsample_colours_and_blend():
    cam = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    big = overlay.upsample(cam, (400, 8))
    assert big.shape == (8, 400) and big.min() >= 0.0 and big.max() <= 1.0
    assert big[0, 0] < 0.1 and big[0, -1] > 0.9  # corners keep their values (half-pixel)
    np.testing.assert_allclose(overlay.upsample(np.full((3, 3), 0.5), (17, 5)), 0.5, atol=1e-6)
    assert overlay.jet(np.array([0.0, 0.5, 1.0])).tolist() == [
        [0, 0, 128],
        [128, 255, 128],
        [128, 0, 0],
    ]
    grey = Image.fromarray(np.full((6, 9), 100, np.uint8))
    assert np.array_equal(np.asarray(overlay.blend(grey, cam, alpha=0.0)), np.full((6, 9, 3), 100))
    png = overlay.overlay_png(_image_bytes(400, 8), cam)
    assert Image.open(io.BytesIO(png)).size == (400, 8)
    with pytest.raises(ValueError):
        overlay.upsample(np.zeros(4), (4, 4))


# --- predict CLI ------------------------------------------------------------------------


def test_predict_cli_folder_writes_overlays_and_json(server, images, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["predict", "--server", server.grpc_target, "--model", "toy", "--batch-size", "2"]
    code = _run_cli([*argv, "--classes", "healthy,sick", "--out", str(out_dir), str(images)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = captured.out.strip().splitlines()
    assert [Path(line.split("\t")[0]).name for line in printed] == sorted(SIZES)
    assert all(line.split("\t")[3] == "roi=none" for line in printed)  # bare images
    for name, size in SIZES.items():
        stem = Path(name).stem
        record = json.loads((out_dir / f"{stem}.json").read_text())
        assert record["gradcam_overlay"] == f"{stem}_{record['class_name']}_gradcam.png"
        with Image.open(out_dir / record["gradcam_overlay"]) as picture:
            assert picture.mode == "RGB" and picture.width >= 2 * size[0]
            assert not _green_pixels(picture)  # whole image: no ROI outline
            left = picture.crop(overlay.panel_boxes(size)[0])  # the original, pixel for pixel
            with Image.open(images / name) as original:
                assert np.array_equal(np.asarray(left), overlay.to_rgb(original))
        caption = record["gradcam_caption"]  # what the overlay states: the record's answer
        assert f"predicted: {record['class_name']}\n" in caption
        assert "roi_source=none" in caption and "model: toy, version 2" in caption
        assert record["image_size"] == list(size)
        assert record["class_name"] == ["healthy", "sick"][record["class_id"]]
        assert abs(sum(record["probabilities"]) - 1.0) < 1e-5
        assert np.asarray(record["gradcam"]).shape == (FEATURE, FEATURE)
        assert record["roi_source"] == "none" and record["mask"] is None
    assert not (out_dir / "a_rgb_mask.json").exists()


def _green_pixels(picture: Image.Image) -> int:
    """Pixels of the ROI outline's colour (the jet blend never makes pure green)."""
    return int((np.asarray(picture.convert("RGB")) == overlay.OUTLINE_COLOUR).all(-1).sum())


@pytest.mark.parametrize("rest", [False, True])
def test_predict_cli_with_mask_outlines_the_given_roi(server, images, tmp_path, capsys, rest):
    out_dir = tmp_path / "out"
    address = server.rest_url if rest else server.grpc_target
    argv = ["predict", "--server", address, "--model", "toy", "--signature", "serving_default"]
    mask = images / "a_rgb_mask.png"  # the centre half of the 40x30 image
    argv += [str(images / "a_rgb.png"), "--mask", str(mask), "--out", str(out_dir)]
    argv += ["--rest"] if rest else []
    code = _run_cli([*argv, "--overlay-style", "compact"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [line] = captured.out.splitlines()
    assert line.split("\t")[3] == "roi=given"
    record = json.loads((out_dir / "a_rgb.json").read_text())
    assert record["roi_source"] == "given" and record["mask"] == str(mask)
    assert "gradcam_caption" not in record  # the compact style draws no caption
    with Image.open(out_dir / record["gradcam_overlay"]) as picture:
        assert picture.size == (40, 30)  # the single panel
        green = np.asarray(picture.convert("RGB")) == overlay.OUTLINE_COLOUR
    rows, cols = np.nonzero(green.all(-1))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 21, 10, 29)
    assert not green.all(-1)[12:18, 15:25].any()  # the ROI's interior keeps the heatmap
    assert _run_cli(argv) == 0, capsys.readouterr().err  # captioned: both outlines
    record = json.loads((out_dir / "a_rgb.json").read_text())
    assert "radiologist's mask (the ROI's source)" in record["gradcam_caption"]
    assert "ROI the model used" in record["gradcam_caption"]
    with Image.open(out_dir / record["gradcam_overlay"]) as picture:
        right = np.asarray(picture.convert("RGB").crop(overlay.panel_boxes((40, 30))[1]))
    assert (right == overlay.MASK_COLOUR).all(-1).any()
    assert (right == overlay.OUTLINE_COLOUR).all(-1).any()


def test_predict_cli_no_mask_signature_ignores_the_mask(server, images, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["predict", "--server", server.grpc_target, "--model", "toy"]
    argv += ["--signature", "predict_no_mask", "--sibling-masks", "--out", str(out_dir)]
    code = _run_cli([*argv, str(images / "a_rgb.png")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.rstrip("\n").endswith("\troi=none")
    record = json.loads((out_dir / "a_rgb.json").read_text())
    assert record["roi_source"] == "none" and record["mask"].endswith("a_rgb_mask.png")
    assert "gradcam" not in record and sorted(os.listdir(out_dir)) == ["a_rgb.json"]


def test_predict_cli_serves_a_model_without_roi_outputs(tmp_path, images, capsys):
    """A model exported before the ROI contract: the same three stdout fields and JSON keys."""
    base = tmp_path / "models" / "old"
    save_toy_model(base, version=1, roi_outputs=False)
    out_dir = tmp_path / "out"
    with serve(base, "old", port=0, rest_port=0) as handle:
        for address, extra in ((handle.grpc_target, []), (handle.rest_url, ["--rest"])):
            argv = ["predict", "--server", address, "--model", "old", *extra]
            mask = images / "a_rgb_mask.png"
            argv += [str(images / "a_rgb.png"), "--mask", str(mask), "--out", str(out_dir)]
            code = _run_cli(argv)
            captured = capsys.readouterr()
            assert code == 0, captured.err
            assert len(captured.out.strip().split("\t")) == 3
            record = json.loads((out_dir / "a_rgb.json").read_text())
            assert "roi_source" not in record
            assert record["gradcam_overlay"] == f"a_rgb_{record['class_name']}_gradcam.png"
            with Image.open(out_dir / record["gradcam_overlay"]) as picture:
                assert not _green_pixels(picture)


def test_predict_cli_rest_with_mask(server, images, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["predict", "--server", server.rest_url, "--rest", "--model", "toy", "--version", "2"]
    mask = images / "a_rgb_mask.png"
    code = _run_cli([*argv, str(images / "a_rgb.png"), "--mask", str(mask), "--out", str(out_dir)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out_dir / "a_rgb.json").read_text())
    assert record["mask"] == str(mask) and record["image_size"] == [40, 30]
    assert record["roi_source"] == "given"


def test_predict_cli_skips_unreadable_and_rejected_images(server, images, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.png").write_bytes((images / "a_rgb.png").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")  # unreadable locally
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tiff, format="TIFF")
    (folder / "tiff_in_disguise.png").write_bytes(tiff.getvalue())  # Pillow yes, TF no
    out_dir = tmp_path / "out"
    argv = ["predict", "--server", server.grpc_target, "--model", "toy"]
    code = _run_cli([*argv, str(folder), "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png: not an image Pillow can read (PNG or JPEG expected)" in captured.err
    assert " object at 0x" not in captured.err and "{{node" not in captured.err
    assert "tiff_in_disguise.png" in captured.err and "INVALID_ARGUMENT" in captured.err
    assert "good.png" in captured.out
    record = json.loads((out_dir / "good.json").read_text())
    overlay_name = f"good_{record['class_name']}_gradcam.png"
    assert sorted(p.name for p in out_dir.iterdir()) == ["good.json", overlay_name]


def test_expand_inputs_and_sibling_masks(tmp_path):
    from serving.cli import expand_inputs, sibling_mask

    (tmp_path / "sub").mkdir()
    (tmp_path / "benign (1).png").write_bytes(_image_bytes(10, 6))
    (tmp_path / "sub" / "b.JPG").write_bytes(_image_bytes(6, 6, fmt="JPEG"))
    (tmp_path / "notes.txt").write_text("not an image")
    halves = []
    for index, rows in enumerate((slice(0, 3), slice(3, 6))):
        mask = np.zeros((6, 10), np.uint8)
        mask[rows, :5] = 255
        halves.append(mask)
        suffix = "_mask" if index == 0 else "_mask_1"
        Image.fromarray(mask).save(tmp_path / f"benign (1){suffix}.png")
    paths, problems = expand_inputs([tmp_path, tmp_path / "benign (1).png", tmp_path / "missing"])
    assert [p.name for p in paths] == ["benign (1).png", "b.JPG"]  # deduplicated, masks skipped
    assert problems == [f"{tmp_path / 'missing'}: no such file or folder"]
    mask_bytes, names = sibling_mask(tmp_path / "benign (1).png", (10, 6))
    union = np.asarray(Image.open(io.BytesIO(mask_bytes))) > 0
    assert np.array_equal(union, (halves[0] | halves[1]) > 0)
    assert names.count("_mask") == 2
    assert sibling_mask(tmp_path / "sub" / "b.JPG", (6, 6)) == (b"", None)
    Image.fromarray(halves[0][:, :8]).save(tmp_path / "benign (1)_mask_2.png")
    with pytest.raises(OSError, match=r"benign \(1\)_mask_2.png: mask size 8x6 differs"):
        sibling_mask(tmp_path / "benign (1).png", (10, 6))


# --- limits -----------------------------------------------------------------------------


def test_batch_and_in_flight_limits_answer_at_once(model_base):
    """Past the batch limit: INVALID_ARGUMENT; with every in-flight slot taken (held here, so
    the test does not depend on timing): RESOURCE_EXHAUSTED / HTTP 429 at once, and the
    next request after a slot frees is served."""
    limits = Limits(max_in_flight=1, max_batch=2, max_request_bytes=2**20)
    with serve(model_base, "toy", port=0, rest_port=0, limits=limits) as handle:
        image = _image_bytes(8, 8)
        client = GrpcClient(handle.grpc_target, "toy", signature="predict_images", timeout_s=20)
        with pytest.raises(InvalidRequestError, match="batch of 3 exceeds .* maximum batch size"):
            client.predict_images([image] * 3)
        assert client.predict_images([image] * 2)["probabilities"].shape == (2, 2)

        slots = handle.admission._slots
        assert slots.acquire(blocking=False)  # the one slot is now busy
        try:
            error = _raw_predict(handle.grpc_target, _good_inputs())
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 1 requests in flight" in error.details()
            body = {"signature_name": "predict_images", "inputs": _rest_inputs([image])}
            status, doc = _http(f"{handle.rest_url}/v1/models/toy:predict", body)
            assert status == 429 and "requests in flight" in doc["error"]
        finally:
            slots.release()
        assert client.predict_images([image])["probabilities"].shape == (1, 2)

        big = {"signature_name": "predict_images", "inputs": _rest_inputs([b"x" * 2**20])}
        status, doc = _http(f"{handle.rest_url}/v1/models/toy:predict", big)
        assert status == 413 and "exceeds the limit" in doc["error"]
        with pytest.raises(ServingError, match="RESOURCE_EXHAUSTED"):
            client.predict_images([b"x" * 2**20])


# --- versions pushed while serving, TF Serving's flags ---------------------------------------


def test_serve_dev_loads_a_newly_pushed_version_and_skips_a_broken_one(tmp_path):
    """As TF Serving polls its base path: a version pushed while serving is loaded and
    answers the next requests; a version that cannot load leaves the current one serving."""
    import time

    base = tmp_path / "toy"
    save_toy_model(base, version=1, seed=7)
    image = [_image_bytes(12, 12)]
    loaded = []
    with serve(
        base, "toy", port=0, rest_port=None, poll_seconds=0.2, on_new_version=loaded.append
    ) as handle:
        with GrpcClient(handle.grpc_target, "toy", signature="predict_images") as client:
            first = client.predict_images(image)["probabilities"]
            save_toy_model(tmp_path / "staging", version=2, seed=8)
            (tmp_path / "staging" / "2").rename(base / "2")  # a push appears whole
            deadline = time.monotonic() + 60
            while handle.version != 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert handle.version == 2 and [s.version for s in loaded] == [2]
            second = client.predict_images(image)["probabilities"]
            expected = (
                tf.saved_model.load(str(base / "2"))
                .signatures["predict_images"](
                    image_bytes=tf.constant(image), mask_bytes=tf.constant([b""])
                )["probabilities"]
                .numpy()
            )
            np.testing.assert_allclose(second, expected, atol=1e-6)
            assert not np.allclose(first, second)
            (base / "3").mkdir()
            (base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
            time.sleep(1.5)  # several polls: the broken version is tried once, then skipped
            assert handle.version == 2 and len(loaded) == 1
            np.testing.assert_allclose(
                client.predict_images(image)["probabilities"], expected, atol=1e-6
            )


def test_tf_serving_flag_names_and_model_config_file(tmp_path):
    from serving.dev.cli import _model_source, add_serve_dev_arguments

    parser = argparse.ArgumentParser()
    add_serve_dev_arguments(parser)
    args = parser.parse_args(
        ["--model_base_path", "/models/toy", "--model_name", "toy", "--port", "9000"]
        + ["--rest_api_port", "9001", "--file_system_poll_wait_seconds", "5"]
    )
    assert (args.model_dir, args.model_name, args.port) == (Path("/models/toy"), "toy", 9000)
    assert (args.rest_port, args.poll_seconds) == (9001, 5.0)
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "toy" base_path: "/models/toy" '
        'model_platform: "tensorflow" } }'
    )
    args = parser.parse_args(["--model_config_file", str(config)])
    assert _model_source(args) == (Path("/models/toy"), "toy")
    config.write_text(
        'model_config_list { config { name: "a" base_path: "/a" } config { name: "b" '
        'base_path: "/b" } }'
    )
    with pytest.raises(ValueError, match="serves one model; the file names 2"):
        _model_source(parser.parse_args(["--model_config_file", str(config)]))
    with pytest.raises(ValueError, match="--model-dir .* or --model_config_file"):
        _model_source(parser.parse_args([]))


# --- audit log --------------------------------------------------------------------------


def _grpc_with_id(target: str, inputs: dict, **spec) -> tuple[str, object]:
    """(x-request-id the server sent back, response or RpcError) of a hand-built request."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("model", "toy")
    request.model_spec.signature_name = spec.get("signature", "predict_images")
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response, call = stub.Predict.with_call(request, timeout=20)
        except grpc.RpcError as error:
            response, call = error, error
    return dict(call.initial_metadata())[audit.HEADER], response


def _rest_with_id(url: str, body: dict | bytes) -> tuple[str, int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.headers[audit.HEADER], reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.headers[audit.HEADER], error.code, json.loads(error.read())


def test_the_audit_log_has_every_request_once(model_base, tmp_path):
    """Good and bad requests over gRPC and REST: one line each, found by the request id
    the server returned, with the model version, each image's SHA-256, the decision and
    the outcome; no pixels, no tf.Example feature but the image's hash (the example below
    carries a recognisable image_id)."""
    log_path = tmp_path / "audit" / "requests.jsonl"
    journal = audit.AuditLog(log_path)
    pictures = [_image_bytes(30, 20, seed=21), _image_bytes(25, 40, seed=22)]
    secret = "PATIENT-Jane-Doe-1970"
    example = build_raw_example(pictures[0], b"", image_id=secret)
    sent: dict[str, dict] = {}  # request id -> what the line must say
    with serve(model_base, "toy", port=0, rest_port=0, audit_log=journal) as s:
        good = {"image_bytes": pictures, "mask_bytes": [b"", b""]}
        rid, response = _grpc_with_id(s.grpc_target, good)
        answer = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        sent[rid] = {"outcome": "OK", "images": pictures, "answer": answer, "protocol": "grpc"}
        rid, response = _grpc_with_id(
            s.grpc_target, {"examples": [example]}, signature="serving_default"
        )
        answer = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        sent[rid] = {"outcome": "OK", "images": pictures[:1], "answer": answer, "protocol": "grpc"}
        bad_image = {"image_bytes": [b"not an image"], "mask_bytes": [b""]}
        rid, _ = _grpc_with_id(s.grpc_target, bad_image)
        sent[rid] = {"outcome": "INVALID_ARGUMENT", "images": [b"not an image"]}
        rid, _ = _grpc_with_id(s.grpc_target, good, model="nope")
        sent[rid] = {"outcome": "NOT_FOUND", "images": pictures, "version": None}
        rid, _ = _grpc_with_id(s.grpc_target, {"image_bytes": np.array([], object)})
        sent[rid] = {"outcome": "INVALID_ARGUMENT", "images": []}
        url = f"{s.rest_url}/v1/models/toy:predict"
        body = {"signature_name": "predict_images", "inputs": _rest_inputs(pictures)}
        rid, status, doc = _rest_with_id(url, body)
        assert status == 200
        answer = {k: np.array(v) for k, v in doc["outputs"].items()}
        sent[rid] = {"outcome": "OK", "images": pictures, "answer": answer, "protocol": "rest"}
        rid, status, _ = _rest_with_id(url, b"{not json")
        sent[rid] = {"outcome": "INVALID_ARGUMENT", "images": [], "version": None, "http": 400}
        bad = {"signature_name": "predict_images", "inputs": _rest_inputs([b"\x89PNG broken"])}
        rid, status, _ = _rest_with_id(url, bad)
        sent[rid] = {"outcome": "INVALID_ARGUMENT", "images": [b"\x89PNG broken"], "http": 400}
        rid, status, _ = _rest_with_id(f"{s.rest_url}/v1/models/nope:predict", body)
        sent[rid] = {"outcome": "NOT_FOUND", "images": [], "version": None, "http": 404}
        # not predict requests: not audited
        assert _http(f"{s.rest_url}/v1/models/toy")[0] == 200
    journal.close()
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert sorted(line["request_id"] for line in lines) == sorted(sent)  # each exactly once
    assert secret not in text and base64.b64encode(pictures[0]).decode()[:40] not in text
    for line in lines:
        want = sent[line["request_id"]]
        assert line["outcome"] == want["outcome"], line
        assert line["protocol"] == want.get("protocol", line["protocol"])
        assert line["version"] == want.get("version", 2)
        assert line["model"] in ("toy", "nope")
        stamp = datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs((datetime.datetime.utcnow() - stamp).total_seconds()) < 600
        assert line["latency_ms"] >= 0
        if "http" in want:
            assert line["http_status"] == want["http"]
        hashes = [image["sha256"] for image in line["images"]]
        assert hashes == [hashlib.sha256(p).hexdigest() for p in want["images"]]
        if "answer" in want:
            answer = want["answer"]
            assert [i["class_id"] for i in line["images"]] == answer["class_id"].tolist()
            p = [i["positive_probability"] for i in line["images"]]
            np.testing.assert_allclose(p, answer["probabilities"][:, 1], atol=1e-6)
        else:
            assert all("class_id" not in image for image in line["images"])


def test_the_audit_log_rotates_by_size(tmp_path):
    path = tmp_path / "audit.jsonl"
    journal = audit.AuditLog(path, max_mb=2 / 1024, backups=3)  # 2 KiB a file
    for i in range(60):
        journal.write(
            audit.entry(
                request_id=f"r{i:03d}",
                protocol="grpc",
                model="m",
                version=1,
                signature="predict_images",
                hashes=["0" * 64],
                latency_ms=1.0,
                outcome="OK",
            )
        )
    journal.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [f"audit.jsonl{s}" for s in ("", ".1", ".2", ".3")]
    assert all(f.stat().st_size <= 2048 for f in files)
    kept = [json.loads(x)["request_id"] for f in files for x in f.read_text().splitlines()]
    assert sorted(kept) == [f"r{i:03d}" for i in range(60 - len(kept), 60)]  # newest kept


# --- the README's REST example -----------------------------------------------------------


def readme_rest_example() -> str:
    """The bash block of README.md between the rest-example markers."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- rest-example:begin -->", 1)[1].split("<!-- rest-example:end -->")[0]
    return block.split("```bash\n", 1)[1].split("```", 1)[0]


def test_the_readme_curl_example_runs_against_the_dev_server(server, direct, tmp_path):
    """The README's request, as printed, with only the server's address, the model's name
    and the image's path swapped for this test's: the answer is the model's."""
    script = readme_rest_example()
    swaps = {
        '"demo_data/busi/benign/benign (1).png"': '"$TEST_IMAGE"',
        "http://127.0.0.1:8501": server.rest_url,
        "/v1/models/lesionlens:predict": "/v1/models/toy:predict",
    }
    for old, new in swaps.items():
        assert script.count(old) == 1, old  # the README still shows what the test swaps
        script = script.replace(old, new)
    image = _image_bytes(48, 36, seed=31)
    (tmp_path / "benign (1).png").write_bytes(image)
    env = {**os.environ, "TEST_IMAGE": str(tmp_path / "benign (1).png")}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (answer,) = json.loads(proc.stdout)["predictions"]
    want = _direct_images(direct, [image])
    np.testing.assert_allclose(answer["probabilities"], want["probabilities"][0], atol=1e-6)
    assert answer["class_id"] == int(want["class_id"][0])
    assert answer["roi_source"] == "none"  # the toy has no segmenter: no mask, whole image
    assert np.array(answer["roi_mask"]).shape == (ROI, ROI)
    np.testing.assert_allclose(answer["gradcam"], want["gradcam"][0], atol=1e-6)
