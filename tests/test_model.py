"""Weights handling: a local no-top weights file loads, one of another architecture is refused
by name; an offline ImageNet download fails at once with instructions."""

import urllib.error

import numpy as np
import pytest
import tf_keras as keras

from modules import model as M
from modules.backbones import WeightsFileError


def test_local_weights_file_is_loaded(tmp_path):
    keras.utils.set_random_seed(5)
    donor = keras.applications.EfficientNetV2B0(
        include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    path = str(tmp_path / "efficientnetv2-b0_notop.h5")
    donor.save_weights(path)
    model = M.build_model(2, 64, path)
    np.testing.assert_array_equal(
        model.get_layer("top_conv").get_weights()[0], donor.get_layer("top_conv").get_weights()[0]
    )
    assert model.output_shape == (None, 2)


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        M.build_model(2, 64, str(tmp_path / "nope.h5"))


def test_weights_of_another_architecture_are_refused_naming_the_file(tmp_path):
    """Keras alone says "Layer count mismatch" or "file signature not found", naming neither
    the file nor what it wanted."""
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3))
    other.save_weights(str(tmp_path / "mobilenet.h5"))
    (tmp_path / "lite0.pth").write_bytes(b"\x80\x02 a torch checkpoint, not HDF5")
    for name in ("mobilenet.h5", "lite0.pth"):
        with pytest.raises(WeightsFileError) as err:
            M.build_model(2, 64, str(tmp_path / name))
        assert str(err.value).startswith(f"{tmp_path / name}: not EfficientNetV2B0 weights")
        assert "efficientnetv2-b0_notop.h5 expected" in str(err.value)


def test_imagenet_download_failure_says_how_to_pass_a_file(monkeypatch):
    """Offline on every machine (the download itself is cut), so the verdict does not depend
    on the network or on a weights file cached in ~/.keras."""
    from tf_keras.src.utils import data_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(data_utils, "get_file", offline)
    with pytest.raises(M.WeightsUnavailableError) as err:
        M.build_model(2, 64, "imagenet")
    assert "--weights /path/efficientnetv2-b0_notop.h5" in str(err.value)
    assert "URLError" in str(err.value)
