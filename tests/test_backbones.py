"""Backbone options besides the default: ResNet50 from a local weights file, and clear errors without weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from lookalike.backbones import backbone_info, block_layer_groups, build_backbone


@pytest.fixture(scope="module")
def resnet_weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    keras.utils.set_random_seed(0)
    model = build_backbone("resnet50", 64, weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5"
    model.save_weights(path)
    return path, model


def test_resnet50_loads_a_local_weights_file(resnet_weights_file) -> None:
    path, original = resnet_weights_file
    loaded = build_backbone("resnet50", 64, weights=str(path))
    batch = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(batch).numpy(), original(batch).numpy(), atol=1e-5)
    assert loaded.output_shape[-1] == backbone_info("resnet50").feature_dim == 2048
    assert len(block_layer_groups(loaded, "resnet50")) == backbone_info("resnet50").num_blocks


def test_resnet50_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ResNet50 weights file not found"):
        build_backbone("resnet50", 64, weights=str(tmp_path / "nope.h5"))


def test_resnet50_without_network_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(RuntimeError, match="backbone.weights in params.yaml"):
        build_backbone("resnet50", 64, weights="imagenet")


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite2, resnet50"):
        backbone_info("vgg16")


def test_lite_blocks_group_the_head_convolution_with_the_last_block() -> None:
    model = build_backbone("efficientnet_lite0", 64, weights=None)
    groups = block_layer_groups(model, "efficientnet_lite0")
    assert len(groups) == backbone_info("efficientnet_lite0").num_blocks == 16
    assert {"conv_head", "bn1", "head_relu"} <= {layer.name for layer in groups[-1]}
