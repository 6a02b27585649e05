"""The embedding model: backbone -> global average pooling (+ colour descriptor) -> head -> unit embedding.

The full model is ``image -> [GAP(backbone), colour] -> head``, with the backbone and head
as nested models named "backbone" and "head", so stages can cache the pooled
backbone features (and the colour descriptor, :mod:`lookalike.model.colour`) once and train or apply
the head alone.

The head ends in one unit sub-vector per attribute (type, colour, ...: ``model.subspaces``), each
scaled by the root of its weight and the whole renormalised, so the stored vector is unit length and
the inner product of two is the weighted sum of their per-attribute cosines. A query re-weights its
own sub-vectors to ask another question of the same index (:mod:`lookalike.search.similarity`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from lookalike.artifacts import atomic_path
from lookalike.model.backbones import build_backbone
from lookalike.model.colour import (
    COLOUR_FEATURES,
    POOLED_SIDE,
    SOFTNESS,
    WHITE_MARGIN,
    _cells,
    border_ring,
    palette,
    reconstruction_steps,
)
from lookalike.model.runtime import EXPORT_MIN_COSINE, EmbeddingRuntime, agreement
from lookalike.params import FEATURES_COLUMN


@keras.saving.register_keras_serializable(package="lookalike")
class ColourDescriptor(keras.layers.Layer):
    """Preprocessed images (batch, side, side, 3) -> float32 (batch, COLOUR_FEATURES): sqrt of soft histograms
    of the whole foreground (all but the near-white region connected to the border: lookalike.model.colour),
    then of each grid cell (row by row) scaled by the root of its foreground share.

    ``normalisation`` is the backbone's input normalisation (``lite`` or ``caffe``), undone here to get RGB.
    """

    def __init__(self, normalisation: str = "lite", **kwargs):
        super().__init__(**kwargs)
        if normalisation not in ("lite", "caffe"):
            raise ValueError(f"unknown normalisation {normalisation!r}")
        self.normalisation = normalisation

    def get_config(self) -> dict:
        return {**super().get_config(), "normalisation": self.normalisation}

    def compute_output_shape(self, input_shape):
        return (input_shape[0], COLOUR_FEATURES)

    def call(self, images):
        if self.normalisation == "lite":
            rgb = images * 128.0 + 127.0
        else:  # caffe: BGR with the ImageNet mean removed
            rgb = ops.flip(images + ops.convert_to_tensor([103.939, 116.779, 123.68], "float32"), axis=-1)
        side = images.shape[1] or POOLED_SIDE
        pool = max(1, int(side) // POOLED_SIDE)
        rgb = ops.average_pool(rgb, pool, pool, padding="valid")
        pixels = ops.clip(rgb / 255.0, 0.0, 1.0)  # (batch, rows, cols, 3)
        rows, cols = int(rgb.shape[1]), int(rgb.shape[2])
        near_white = ops.sigmoid(-(ops.max(1.0 - pixels, axis=-1, keepdims=True) - WHITE_MARGIN) * 40.0)
        # the background grows from the border through near-white pixels (colour.border_background), unrolled:
        # max pools and minima, which LiteRT runs as builtins
        background = near_white * ops.convert_to_tensor(border_ring(rows, cols)[None, :, :, None])
        for _ in range(reconstruction_steps(rows, cols)):
            grown = ops.maximum(ops.max_pool(background, (3, 1), 1, padding="same"),
                                ops.max_pool(background, (1, 3), 1, padding="same"))
            background = ops.minimum(grown, near_white)
        foreground = 1.0 - background[..., 0]  # (batch, rows, cols)
        centres = ops.convert_to_tensor(palette())
        distance = (ops.sum(pixels**2, axis=-1, keepdims=True) - 2.0 * ops.matmul(pixels, ops.transpose(centres))
                    + ops.sum(centres**2, axis=-1))
        weighted = ops.softmax(-distance / (2.0 * SOFTNESS**2), axis=-1) * foreground[..., None]
        parts = [ops.sqrt(ops.sum(weighted, axis=(1, 2)) / (ops.sum(foreground, axis=(1, 2))[:, None] + 1e-6) + 1e-8)]
        for top, bottom in _cells(rows):
            for left, right in _cells(cols):
                cell, share = weighted[:, top:bottom, left:right], foreground[:, top:bottom, left:right]
                total = ops.sum(share, axis=(1, 2))[:, None]
                parts.append(ops.sqrt(ops.sum(cell, axis=(1, 2)) / (total + 1e-6) + 1e-8)
                             * ops.sqrt(total / ((bottom - top) * (right - left))))
        return ops.concatenate(parts, axis=-1)


@keras.saving.register_keras_serializable(package="lookalike")
class PrincipalProjection(keras.layers.Layer):
    """Features (batch, feature_dim) -> float32 (batch, dim) unit rows: the backbone part and the colour part (the
    last ``colour_features`` numbers) each scaled to unit length, joined, centred and projected on fixed principal
    axes (:meth:`fit`, on the train split's features). Not trained: the sub-space keeps what the backbone's features
    (pretrained, or with fine-tuned top blocks the kept ones) tell apart (one product from another of its type and
    colour), which the label-trained sub-spaces drop."""

    def __init__(self, dim: int, colour_features: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.colour_features = int(dim), int(colour_features)

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "colour_features": self.colour_features}

    def build(self, input_shape):
        width = int(input_shape[-1])
        if not self.dim <= width:
            raise ValueError(f"a principal projection to {self.dim} dimensions needs at least as many features, "
                             f"not {width}")
        self.mean = self.add_weight(shape=(width,), initializer="zeros", trainable=False, name="mean")
        self.axes = self.add_weight(shape=(width, self.dim), initializer="zeros", trainable=False, name="axes")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def call(self, features):
        def unit(x):
            return x / ops.maximum(ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True)), 1e-12)

        split = int(features.shape[-1]) - self.colour_features
        joined = unit(features) if not self.colour_features else ops.concatenate(
            [unit(features[:, :split]), unit(features[:, split:])], axis=-1)
        return unit(ops.matmul(joined - self.mean, self.axes))

    def joined(self, features: np.ndarray) -> np.ndarray:
        """float64 (n, feature_dim): what :meth:`call` projects, in numpy."""
        def unit(x):
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

        features = np.asarray(features, np.float64)
        split = features.shape[1] - self.colour_features
        return unit(features) if not self.colour_features else np.concatenate(
            [unit(features[:, :split]), unit(features[:, split:])], axis=1)

    def fit(self, features: np.ndarray) -> None:
        """Set the mean and the top ``dim`` principal axes from ``features`` (n, feature_dim): the covariance's
        eigenvectors, largest first, each signed so its largest entry is positive (the same axes on any machine)."""
        joined = self.joined(features)
        mean = joined.mean(axis=0)
        centred = joined - mean
        values, vectors = np.linalg.eigh(centred.T @ centred)
        axes = vectors[:, np.argsort(-values, kind="stable")[: self.dim]]
        axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(self.dim)])
        self.mean.assign(mean.astype(np.float32))
        self.axes.assign(axes.astype(np.float32))


def fit_projections(head: keras.Model, features: np.ndarray) -> int:
    """Fit every :class:`PrincipalProjection` of ``head`` on ``features`` (the train split's, view 0); how many."""
    layers = [layer for layer in head.layers if isinstance(layer, PrincipalProjection)]
    for layer in layers:
        layer.fit(features)
    return len(layers)


def build_head(feature_dim: int, hidden_dim: int = 512, embedding_dim: int = 256,
               dropout: float = 0.0, embedding: str = "head", seed: int = 0,
               subspaces: dict[str, dict] | None = None, colour_features: int = 0) -> keras.Model:
    """Features (feature_dim,) -> Dense(hidden, ReLU) -> one Dense + L2 norm per sub-space -> weighted concat
    -> L2 norm. ``subspaces``: name -> {"dim", "weight"} in order; None: one sub-space of ``embedding_dim``
    (the type-only head). A sub-space whose "column" is FEATURES_COLUMN is a :class:`PrincipalProjection` of the
    features (``colour_features``: the colour descriptor's length at their end), fitted, not trained
    (:func:`fit_projections`). With more than one sub-space the model has, after the stored embedding, one output
    per trained sub-space, for the loss.

    ``embedding="concat"`` returns the unit head output beside the unit features, renormalised.
    """
    subspaces = subspaces or {"type": {"dim": embedding_dim, "weight": 1.0}}
    init = keras.initializers.GlorotUniform
    features = keras.Input((feature_dim,), name="pooled_features")
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(features) if dropout else features
    x = keras.layers.Dense(hidden_dim, activation="relu", kernel_initializer=init(seed), name="dense_hidden")(x)
    parts, trained = [], []
    for i, (name, spec) in enumerate(subspaces.items()):
        if spec.get("column") == FEATURES_COLUMN:
            parts.append(PrincipalProjection(int(spec["dim"]), colour_features, name=f"project_{name}")(features))
            continue
        dense_name = "dense_embedding" if len(subspaces) == 1 else f"dense_{name}"
        part = keras.layers.Dense(int(spec["dim"]), kernel_initializer=init(seed + 1 + i), name=dense_name)(x)
        unit_name = "l2_normalise" if len(subspaces) == 1 else f"unit_{name}"
        parts.append(keras.layers.UnitNormalization(name=unit_name)(part))
        trained.append(parts[-1])
    if len(parts) == 1:
        x = parts[0]
    else:
        scaled = [keras.layers.Rescaling(float(np.sqrt(spec["weight"])), name=f"weight_{name}")(part)
                  for part, (name, spec) in zip(parts, subspaces.items(), strict=True)]
        x = keras.layers.UnitNormalization(name="l2_normalise")(keras.layers.Concatenate(name="subspaces")(scaled))
    if embedding == "concat":
        unit_features = keras.layers.UnitNormalization(name="unit_features")(features)
        x = keras.layers.Concatenate(name="concat")([x, unit_features])
        x = keras.layers.UnitNormalization(name="l2_normalise_concat")(x)
    return keras.Model(features, [x, *trained] if len(parts) > 1 else x, name="head")


def final_output(model: keras.Model) -> keras.Model:
    """The model with only its first output (the stored embedding), for export and embedding."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=model.name)


def with_colour(image, features, colour_normalisation: str | None):
    """``features`` of ``image`` (Keras tensors), with the image's colour descriptor after them when
    ``colour_normalisation`` (the backbone's input normalisation) is given."""
    if not colour_normalisation:
        return features
    return keras.layers.Concatenate(name="with_colour")(
        [features, ColourDescriptor(colour_normalisation, name="colour_descriptor")(image)])


def build_feature_model(backbone: keras.Model, colour_normalisation: str | None = None) -> keras.Model:
    """image -> pooled backbone features, and with ``colour_normalisation`` (the backbone's input
    normalisation) the colour descriptor after them: the pretrained baseline and the training input."""
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="global_average_pooling")(backbone(inputs))
    return keras.Model(inputs, with_colour(inputs, pooled, colour_normalisation), name="feature_model")


def build_bottom_model(bottom: keras.Model, colour_normalisation: str | None = None) -> keras.Model:
    """image -> one flat row: the maps entering the blocks that fine-tune (``bottom``'s output, flattened), and
    with ``colour_normalisation`` the colour descriptor after them. What the features stage caches per view, so
    the top blocks train on maps while the head still sees the descriptor of the very same (augmented) photo."""
    inputs = keras.Input(bottom.input_shape[1:], name="image")
    row = keras.layers.Flatten(name="flat_maps")(bottom(inputs))
    return keras.Model(inputs, with_colour(inputs, row, colour_normalisation), name="bottom_model")


def build_pooled_top(top: keras.Model, colour_features: int = 0) -> keras.Model:
    """A flat row of :func:`build_bottom_model` -> the head's input: GAP(top(maps)), then the row's colour
    descriptor (its last ``colour_features`` numbers) unchanged. Fine-tuning trains ``top``'s layers through it."""
    map_shape = tuple(int(d) for d in top.input_shape[1:])
    size = int(np.prod(map_shape))
    row = keras.Input((size + colour_features,), name="flat_row")
    maps = keras.layers.Reshape(map_shape, name="maps")(row[:, :size] if colour_features else row)
    pooled = keras.layers.GlobalAveragePooling2D(name="global_average_pooling")(top(maps))
    if colour_features:
        pooled = keras.layers.Concatenate(name="with_colour")([pooled, row[:, size:]])
    return keras.Model(row, pooled, name="pooled_top")


def build_embedding_model(backbone: keras.Model, head: keras.Model,
                          colour_normalisation: str | None = None) -> keras.Model:
    """image (preprocessed, float32) -> unit embedding."""
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="global_average_pooling")(backbone(inputs))
    outputs = head(with_colour(inputs, pooled, colour_normalisation))
    if isinstance(outputs, list):
        outputs = outputs[0]
    return keras.Model(inputs, outputs, name="lookalike_embedder")


def new_backbone(name: str, image_size: int, weights: str | None) -> keras.Model:
    """The backbone, renamed "backbone" so the embedding model can find it."""
    backbone = build_backbone(name, image_size, weights)
    backbone.name = "backbone"
    return backbone


def load_embedding_model(path: str | Path) -> keras.Model:
    return keras.models.load_model(path, compile=False)


def save_embedding_model(model: keras.Model, path: str | Path) -> None:
    """``model.save``, then the archive made byte-stable: Keras stamps the time of saving into metadata.json and
    into the weights' zip entry, and names objects shared between layers by their memory address in
    config.json, so the same weights saved twice hashed differently (and DVC reran every stage after a training
    that changed nothing). Entries keep their order, contents and compression; their times are 1980-01-01,
    ``date_saved`` is left out and shared objects are numbered in order of appearance."""
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                data = json.dumps(_numbered_shared_objects(json.loads(data), {})).encode()
            stable = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            stable.compress_type, stable.external_attr = info.compress_type, info.external_attr
            archive.writestr(stable, data)


def _numbered_shared_objects(config, numbers: dict[int, int]):
    """``config`` with each ``shared_object_id`` (a memory address) replaced by its order of first appearance:
    the loader only asks which entries share one object."""
    if isinstance(config, dict):
        return {key: numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id" else
                _numbered_shared_objects(value, numbers) for key, value in config.items()}
    if isinstance(config, list):
        return [_numbered_shared_objects(value, numbers) for value in config]
    return config


class CompiledModel:
    """A Keras model behind one traced ``tf.function``: no per-call Keras overhead.

    ``model.predict`` on one image costs tens of milliseconds of fixed overhead;
    a traced function with a batch dimension of None is traced once and reused.
    """

    def __init__(self, model: keras.Model):
        model = final_output(model)  # a head with one output per sub-space: only the stored embedding
        self.model = model
        signature = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[signature])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One output's shape, without the batch dimension: (dim,) or (h, w, c)."""
        return tuple(int(d) for d in self.model.output_shape[1:])

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self._call(tf.convert_to_tensor(inputs, tf.float32)).numpy()


class ExportMismatchError(RuntimeError):
    """An exported model's outputs disagree with the Keras model it came from: the build is refused."""


def keras_outputs(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """float32: the Keras model (one traced function) over ``images``, in batches."""
    compiled = CompiledModel(model)
    return np.concatenate([compiled(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def runtime_flatbuffer(model: keras.Model) -> bytes:
    """The LiteRT flatbuffer of ``model`` (batch dimension free), converted from one traced function.

    ``TFLiteConverter.from_concrete_functions`` with a module that tracks the model's variables: the same
    graph as a SavedModel export, without writing and re-reading one (about 2.5x faster on the default
    backbone: docs/benchmarks.md).
    """
    model = final_output(model)
    module = tf.Module()
    module.variables_of_model = [variable.value for variable in model.weights]  # the tf.Variables behind Keras'
    signature = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    traced = tf.function(lambda x: model(x, training=False), input_signature=[signature])
    return tf.lite.TFLiteConverter.from_concrete_functions([traced.get_concrete_function()], module).convert()


def export_runtime_model(model: keras.Model, path: str | Path, check_images: np.ndarray,
                         what: str = "model") -> dict[str, float]:
    """Convert ``model`` for the inference runtime (LiteRT, float32) and write it to ``path``, atomically,
    only if it agrees with Keras on ``check_images`` (real preprocessed photos): min cosine >=
    EXPORT_MIN_COSINE, else :class:`ExportMismatchError` and nothing is written. Returns the agreement.

    The conversion is TensorFlow's own (``tf.lite.TFLiteConverter``): no other export package. The same
    Keras model gives the same bytes (tests/test_runtime.py).
    """
    path = Path(path)
    flatbuffer = runtime_flatbuffer(model)
    reference = keras_outputs(model, check_images)
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
        found = agreement(reference, EmbeddingRuntime(tmp)(check_images))
        if not found["min_cosine"] >= EXPORT_MIN_COSINE:
            raise ExportMismatchError(
                f"the exported {what} ({path.name}) disagrees with the Keras model on {len(check_images)} catalogue "
                f"photos: min cosine {found['min_cosine']:.6f} < {EXPORT_MIN_COSINE} (max abs diff "
                f"{found['max_abs_diff']:.2g}); the build is refused. Check the TensorFlow and ai-edge-litert "
                "versions against requirements.txt")
    return found
