"""The embedding model: backbone -> global average pooling -> head -> unit-length embedding.

The full model is ``image -> backbone -> GAP -> head``, with the backbone and head
as nested models named "backbone" and "head", so stages can cache the pooled
backbone features once and train or apply the head alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lookalike.artifacts import atomic_path
from lookalike.backbones import build_backbone
from lookalike.runtime import EXPORT_MIN_COSINE, EmbeddingRuntime, agreement


def build_head(feature_dim: int, hidden_dim: int = 512, embedding_dim: int = 256,
               dropout: float = 0.0, embedding: str = "head", seed: int = 0) -> keras.Model:
    """Pooled backbone features (feature_dim,) -> Dense(hidden, ReLU) -> Dense(emb) -> L2 norm.

    ``embedding="concat"`` returns the unit head output beside the unit backbone
    features, renormalised: (embedding_dim + feature_dim,).
    """
    init = keras.initializers.GlorotUniform
    features = keras.Input((feature_dim,), name="pooled_features")
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(features) if dropout else features
    x = keras.layers.Dense(hidden_dim, activation="relu", kernel_initializer=init(seed), name="dense_hidden")(x)
    x = keras.layers.Dense(embedding_dim, kernel_initializer=init(seed + 1), name="dense_embedding")(x)
    x = keras.layers.UnitNormalization(name="l2_normalise")(x)
    if embedding == "concat":
        unit_features = keras.layers.UnitNormalization(name="unit_features")(features)
        x = keras.layers.Concatenate(name="concat")([x, unit_features])
        x = keras.layers.UnitNormalization(name="l2_normalise_concat")(x)
    return keras.Model(features, x, name="head")


def build_feature_model(backbone: keras.Model) -> keras.Model:
    """image -> pooled backbone features: the pretrained baseline and the training input."""
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="global_average_pooling")(backbone(inputs))
    return keras.Model(inputs, pooled, name="feature_model")


def build_embedding_model(backbone: keras.Model, head: keras.Model) -> keras.Model:
    """image (preprocessed, float32) -> unit embedding; given the backbone's top blocks
    instead, their cached input maps -> unit embedding (what fine-tuning trains)."""
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="global_average_pooling")(backbone(inputs))
    return keras.Model(inputs, head(pooled), name="lookalike_embedder")


def new_backbone(name: str, image_size: int, weights: str | None) -> keras.Model:
    """The backbone, renamed "backbone" so the embedding model can find it."""
    backbone = build_backbone(name, image_size, weights)
    backbone.name = "backbone"
    return backbone


def load_embedding_model(path: str | Path) -> keras.Model:
    return keras.models.load_model(path, compile=False)


class CompiledModel:
    """A Keras model behind one traced ``tf.function``: no per-call Keras overhead.

    ``model.predict`` on one image costs tens of milliseconds of fixed overhead;
    a traced function with a batch dimension of None is traced once and reused.
    """

    def __init__(self, model: keras.Model):
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


def export_runtime_model(model: keras.Model, path: str | Path, check_images: np.ndarray,
                         what: str = "model") -> dict[str, float]:
    """Convert ``model`` for the inference runtime (LiteRT, float32) and write it to ``path``, atomically,
    only if it agrees with Keras on ``check_images`` (real preprocessed photos): min cosine >=
    EXPORT_MIN_COSINE, else :class:`ExportMismatchError` and nothing is written. Returns the agreement.

    The conversion is TensorFlow's own (a SavedModel, then ``tf.lite.TFLiteConverter``): no other
    export package. The same Keras model gives the same bytes (tests/test_runtime.py).
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="lookalike-export-") as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
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
