"""Backbone options besides the default: ResNet50 from a local weights file, and clear errors without weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from lookalike.model.backbones import backbone_info, block_layer_groups, build_backbone, split_backbone


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


@pytest.mark.parametrize(("name", "blocks", "map_shape"), [
    ("efficientnet_lite0", 8, (4, 4, 80)),  # 64 px: the input of stage 5 is 4x4x80
    ("efficientnet_lite0", 1, (2, 2, 192)),
    ("resnet50", 3, (4, 4, 1024)),  # the last stage's three blocks take conv4_block6's output
])
def test_split_backbone_top_of_bottom_is_the_backbone(name: str, blocks: int, map_shape: tuple) -> None:
    keras.utils.set_random_seed(0)
    backbone = build_backbone(name, 64, weights="imagenet" if name.startswith("efficientnet") else None)
    bottom, top = split_backbone(backbone, name, blocks)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    maps, outputs = bottom(images).numpy(), backbone(images).numpy()
    assert tuple(maps.shape[1:]) == map_shape
    assert np.abs(maps).max() > 0 and np.abs(outputs[0] - outputs[1]).max() > 1e-3  # not a trivial pass
    np.testing.assert_allclose(top(maps), outputs, atol=1e-4)
    assert {w.path for w in top.weights} <= {w.path for w in backbone.weights}  # shared, not copied


@pytest.mark.parametrize("blocks", [0, 16])
def test_split_backbone_needs_a_block_on_each_side(blocks: int) -> None:
    backbone = build_backbone("efficientnet_lite0", 64, weights=None)
    with pytest.raises(ValueError, match="between 1 and 15"):
        split_backbone(backbone, "efficientnet_lite0", blocks)
