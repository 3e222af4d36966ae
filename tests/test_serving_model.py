"""The pipeline's pushed model behind the dev server: gRPC and REST clients, the predict
CLI with overlays, and bad input that must not take the server down."""

import concurrent.futures
import io
import json
import os

import numpy as np
import pytest
from conftest import bomb_jpeg, bomb_png, peak_rss_growth
from PIL import Image

from lesionlens.cli import main
from modules import contract as C
from serving import overlay
from serving.client import GrpcClient, RestClient
from serving.dev.server import serve
from serving.errors import InvalidRequestError


@pytest.fixture(scope="module")
def server(demo_pipeline):
    cfg, pushed, records = demo_pipeline
    handle = serve(os.path.dirname(pushed), "lesionlens", port=0, rest_port=0)
    yield handle, records.parent / "raw"
    handle.stop()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_predict_cli_writes_overlays_at_original_size(server, tmp_path, capsys):
    handle, raw = server
    out = tmp_path / "pred"
    folder = raw / "malignant"
    rc = main(
        [
            "predict",
            "--server",
            handle.grpc_target,
            "--model",
            "lesionlens",
            "--sibling-masks",
            "--out",
            str(out),
            str(folder),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    images = sorted(p for p in os.listdir(folder) if "_mask" not in p)
    overlays = sorted(os.listdir(out))
    assert len([o for o in overlays if o.endswith("_gradcam.png")]) == len(images)
    first = images[0]
    stem = os.path.splitext(first)[0]
    resp = json.loads((out / f"{stem}.json").read_text())
    assert resp["gradcam_overlay"] == f"{stem}_{resp['class_name']}_gradcam.png"
    with Image.open(out / resp["gradcam_overlay"]) as drawn, Image.open(folder / first) as image:
        left = drawn.crop(overlay.panel_boxes(image.size)[0])  # the original, full size
        assert np.array_equal(np.asarray(left), overlay.to_rgb(image))
    assert np.array(resp["gradcam"]).shape == (2, 2)
    assert abs(sum(resp["probabilities"]) - 1) < 1e-5
    if resp["mask"]:
        assert resp["roi_source"] == C.ROI_GIVEN
    else:
        assert resp["roi_source"] in (C.ROI_PREDICTED, C.ROI_NONE)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(images)
    assert all(line.split("\t")[3].removeprefix("roi=") in C.ROI_SOURCES for line in printed)


def test_predict_cli_without_masks_uses_the_models_own_roi(server, tmp_path, capsys):
    """Bare images (what a deployed client sends): the segmenter's ROI or the whole image."""
    handle, raw = server
    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("benign (1).png", "benign (2).png"):
        (folder / name).write_bytes((raw / "benign" / name).read_bytes())
    out = tmp_path / "pred"
    for signature in ("predict_images", "predict_no_mask"):
        argv = ["predict", "--server", handle.grpc_target, "--model", "lesionlens"]
        rc = main([*argv, "--signature", signature, "--out", str(out / signature), str(folder)])
        assert rc == 0, capsys.readouterr().err
    for name in ("benign (1)", "benign (2)"):
        with_cam = json.loads((out / "predict_images" / f"{name}.json").read_text())
        deployable = json.loads((out / "predict_no_mask" / f"{name}.json").read_text())
        assert with_cam["roi_source"] in (C.ROI_PREDICTED, C.ROI_NONE)
        assert deployable["roi_source"] == with_cam["roi_source"]
        np.testing.assert_allclose(
            deployable["probabilities"], with_cam["probabilities"], atol=1e-5
        )
        overlay = f"{name}_{with_cam['class_name']}_gradcam.png"
        assert (out / "predict_images" / overlay).is_file()


def test_grpc_and_rest_agree_and_bad_input_is_rejected_cleanly(server):
    handle, raw = server
    image = (raw / "benign" / "benign (1).png").read_bytes()
    mask = (raw / "benign" / "benign (1)_mask.png").read_bytes()
    grpc_client = GrpcClient(handle.grpc_target, "lesionlens", signature="predict_images")
    rest_client = RestClient(handle.rest_url, "lesionlens", signature="predict_images")
    g = grpc_client.predict_images([image, image], [mask, b""])
    r = rest_client.predict_images([image, image], [mask, b""])
    np.testing.assert_allclose(g["probabilities"], r["probabilities"], atol=1e-5)
    assert g["gradcam"].shape == (2, 2, 2)
    assert g["roi_source"].tolist() == r["roi_source"].tolist()  # bytes on both transports
    assert g["roi_source"][0] == b"given" and g["roi_source"][1] in (b"predicted", b"none")
    assert g["roi_mask"].dtype == r["roi_mask"].dtype == np.uint8
    assert g["roi_mask"].shape == (2, C.ROI_MASK_SIZE, C.ROI_MASK_SIZE)
    np.testing.assert_array_equal(g["roi_mask"], r["roi_mask"])

    wrong_mask = png_bytes(np.full((7, 9), 255, np.uint8))
    with pytest.raises(InvalidRequestError, match="mask size differs"):
        grpc_client.predict_images([image], [wrong_mask])
    with pytest.raises(InvalidRequestError):
        grpc_client.predict_images([b"this is not an image"], [b""])
    tall = png_bytes(np.random.default_rng(0).integers(0, 255, (600, 6, 3), dtype=np.uint8))
    odd = grpc_client.predict_images([tall], [b""])  # extreme aspect ratio: resized like any
    assert odd["probabilities"].shape == (1, 2)
    again = grpc_client.predict_images([image], [mask])  # the server is still up
    np.testing.assert_allclose(again["probabilities"][0], g["probabilities"][0], atol=1e-5)


@pytest.mark.parametrize("make_bomb", [bomb_png, bomb_jpeg])
def test_every_signature_rejects_a_bomb_by_its_header_and_survives_four_at_once(server, make_bomb):
    """20000 x 20000 pixels in a few dozen KB: INVALID_ARGUMENT naming the size and the limit
    from every decoding signature, before any large allocation (the server's peak RSS grows
    by far less than one decoded bomb, 1.2 GB); four at once leave it answering."""
    handle, raw = server
    bomb = make_bomb()
    limit = "20000x20000 pixels, above the pixel budget of 16000000"
    image = (raw / "benign" / "benign (1).png").read_bytes()
    with peak_rss_growth() as growth:  # the server runs in this process
        for signature in ("predict_images", "serving_default", "predict_only", "predict_no_mask"):
            client = GrpcClient(handle.grpc_target, "lesionlens", signature=signature)
            with pytest.raises(InvalidRequestError, match=limit):
                client.predict_images([bomb], [b""])
        client = GrpcClient(handle.grpc_target, "lesionlens", signature="predict_images")
        with pytest.raises(InvalidRequestError, match="mask size differs"):
            client.predict_images([image], [bomb])
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            errors = list(pool.map(lambda _: _error_of(client, bomb), range(4)))
    assert growth() < 300  # one decoded bomb: 1200 MB
    assert all(isinstance(e, InvalidRequestError) for e in errors), errors
    assert client.predict_images([image])["probabilities"].shape == (1, 2)


def _error_of(client, bomb: bytes) -> Exception | None:
    try:
        client.predict_images([bomb])
    except Exception as error:
        return error
    return None
