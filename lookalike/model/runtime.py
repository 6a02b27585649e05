"""Inference without TensorFlow: the pipeline's exported models run through LiteRT (XNNPACK, float32).

Training and fine-tuning stay in TensorFlow/Keras; the pipeline converts the trained embedding
model (and the frozen backbone) with TensorFlow's own ``tf.lite.TFLiteConverter``
(:func:`lookalike.model.network.export_runtime_model`), checks it against Keras, and pins it in the
manifest. Everything that runs a model over images (queries, the features and embed stages,
``evaluate-folder``) goes through :class:`EmbeddingRuntime`; this module never imports TensorFlow,
so neither does :mod:`lookalike.search.engine`. Why LiteRT and not ONNX Runtime or OpenVINO: README,
"Inference runtime" (``python -m bench.runtimes`` measures all of them).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.model.preprocessing import PreprocessSpec
from lookalike.model.views import iter_input_batches

RUNTIME_SUFFIX = ".tflite"
EXPORT_MIN_COSINE = 0.9999  # an exported model must agree this well with Keras on real photos, or the build fails
EXPORT_CHECK_PHOTOS = 32  # how many catalogue photos (spread over the subset) the check runs


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0))


class EmbeddingRuntime:
    """One exported model: ``runtime(batch)`` maps float32 (n, h, w, 3) to float32 (n, *output_shape).

    ``threads``: intra-op threads of the one interpreter (default: the cores available). Safe to
    share between threads: LiteRT allows one call at a time per interpreter, so calls take a lock;
    each call already keeps ``threads`` cores busy, so queueing costs little on a small machine.
    The interpreter is resized when the batch size changes (cheap after the first time per size).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.threads = int(threads) if threads else available_cores()
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0]["index"], outputs[0]["index"]
        self.input_shape = tuple(int(d) for d in inputs[0]["shape_signature"][1:])
        self.output_shape = tuple(int(d) for d in outputs[0]["shape_signature"][1:])
        self._batch = -1
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[1:] != self.input_shape:
            raise ValueError(f"input of shape {batch.shape}, but {self.path.name} takes (n, *{self.input_shape})")
        if len(batch) == 0:
            return np.zeros((0, *self.output_shape), np.float32)
        with self._lock:
            if len(batch) != self._batch:
                self._interpreter.resize_tensor_input(self._input, batch.shape, strict=False)
                self._interpreter.allocate_tensors()
                self._batch = len(batch)
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output)  # a copy, owned by the caller


def predict_paths(
    model,
    paths: list[str],
    spec: PreprocessSpec,
    batch_size: int = 32,
    augment_seed: int | None = None,
    description: str = "images",
    alterations: tuple[str, ...] = (),
    alteration_rate: float = 0.5,
) -> np.ndarray:
    """float32 (len(paths), *model.output_shape): a model (an :class:`EmbeddingRuntime`) over image
    files, decoding the next batch while the current one runs."""
    out = np.empty((len(paths), *model.output_shape), dtype=np.float32)
    position = 0
    with tqdm(total=len(paths), desc=description, unit="img", mininterval=5) as progress:
        for batch in iter_input_batches(paths, spec, batch_size, augment_seed, alterations=alterations,
                                        alteration_rate=alteration_rate):
            out[position : position + len(batch)] = model(batch)
            position += len(batch)
            progress.update(len(batch))
    return out


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How far two models' outputs on the same inputs are apart: max abs diff and min row cosine."""
    a = np.asarray(reference, np.float64).reshape(len(reference), -1)
    b = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
            "min_cosine": float(cosine.min()) if len(cosine) else 1.0}


def check_images(paths: list[str], spec: PreprocessSpec, count: int = EXPORT_CHECK_PHOTOS) -> np.ndarray:
    """float32 (<= count, h, w, 3): real catalogue photos, evenly spaced over ``paths``, preprocessed as the
    model sees them: what an exported model is checked against Keras on."""
    rows = np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int))
    return np.concatenate(list(iter_input_batches([paths[r] for r in rows], spec, 32)))
