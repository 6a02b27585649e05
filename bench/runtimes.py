"""CPU inference runtimes for the pinned embedding model, in one process, interleaved: speed and agreement with TF.

The Keras model of artifacts/ (model.keras, with the manifest's preprocessing) is converted to each format
here, then every runtime runs the same preprocessed catalogue photos:

  - TensorFlow as the project ran it before the move to LiteRT: the model behind one traced tf.function (oneDNN as
    this TensorFlow build defaults to on this CPU; its start-up log says which);
  - LiteRT (``ai-edge-litert``, XNNPACK) on the model converted by TensorFlow's own ``tf.lite.TFLiteConverter``,
    float32, exported and run exactly as the project does (lookalike.model.network.export_runtime_model,
    lookalike.model.runtime.EmbeddingRuntime), and a dynamic-range int8 conversion (``Optimize.DEFAULT``);
  - ONNX Runtime and OpenVINO on the model converted by tf2onnx (opset 17), OpenVINO at float32 precision.

Runtimes whose package is not installed are listed as skipped (``pip install onnxruntime tf2onnx onnx openvino``
to add them; only the chosen one is in requirements.txt). Threads: every runtime gets the cores available.

Speed: ``--rounds`` rounds; in each, every runtime runs one batch of 32 and then ``--singles`` one-image calls,
the runtimes taking turns (order rotated per round), so the machine's load falls on all alike. Agreement:
the embeddings of ``--agreement`` photos against TensorFlow's, max abs diff and min cosine.

    python -m bench.runtimes            # 8 rounds x (32-batch + 20 singles), 256 photos for agreement: ~2 min
    python -m bench.runtimes --quick    # 2 rounds x (32 + 5), 64 photos
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import print_table, summary_ms, write_results
from lookalike.model.preprocessing import PreprocessSpec
from lookalike.model.views import iter_input_batches
from lookalike.params import PROJECT_ROOT

BATCH = 32


def cores() -> int:
    return len(os.sched_getaffinity(0))


def tensorflow_runner(keras_model):
    from lookalike.model.network import CompiledModel

    return CompiledModel(keras_model)


def project_runner(keras_model, path: Path, photos: np.ndarray):
    """LiteRT as the project runs it: exported by lookalike.model.network.export_runtime_model (TensorFlow's
    converter on one traced function, checked against Keras), run by lookalike.model.runtime.EmbeddingRuntime."""
    from lookalike.model.network import export_runtime_model
    from lookalike.model.runtime import EmbeddingRuntime

    export_runtime_model(keras_model, path, photos)
    return EmbeddingRuntime(path)


def litert_runner(tflite_path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=cores())
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    shape = [None]

    def call(batch: np.ndarray) -> np.ndarray:
        if shape[0] != batch.shape:
            interpreter.resize_tensor_input(source, batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(source, batch)
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    return call


def onnxruntime_runner(onnx_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cores()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def openvino_runner(onnx_path: Path):
    import openvino as ov

    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
        "INFERENCE_NUM_THREADS": cores(), "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda batch: request.infer([batch])[0].copy()


def export_tflite(keras_model, path: Path, int8: bool = False) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path.write_bytes(converter.convert())


def export_onnx(keras_model, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((None, *keras_model.input_shape[1:]), tf.float32, name="image")]
    function = tf.function(lambda x: keras_model(x, training=False), input_signature=signature)
    tf2onnx.convert.from_function(function, input_signature=signature, opset=17, output_path=str(path))


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def build_runners(keras_model, folder: Path, photos: np.ndarray) -> tuple[dict, dict]:
    runners, skipped = {"TensorFlow (tf.function, as the project ran it)": tensorflow_runner(keras_model)}, {}
    if installed("ai_edge_litert"):
        runners["LiteRT float32 (XNNPACK; lookalike.model.runtime)"] = project_runner(
            keras_model, folder / "model.tflite", photos)
        export_tflite(keras_model, folder / "model_int8.tflite", int8=True)
        runners["LiteRT dynamic-range int8"] = litert_runner(folder / "model_int8.tflite")
    else:
        skipped["LiteRT"] = "pip install ai-edge-litert"
    if installed("tf2onnx", "onnx"):
        export_onnx(keras_model, folder / "model.onnx")
        if installed("onnxruntime"):
            runners["ONNX Runtime (tf2onnx, opset 17)"] = onnxruntime_runner(folder / "model.onnx")
        else:
            skipped["ONNX Runtime"] = "pip install onnxruntime"
        if installed("openvino"):
            runners["OpenVINO f32 (same ONNX file)"] = openvino_runner(folder / "model.onnx")
        else:
            skipped["OpenVINO"] = "pip install openvino"
    else:
        skipped["ONNX Runtime, OpenVINO"] = "pip install tf2onnx onnx (the converter)"
    return runners, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 5 singles, 64 photos for agreement")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--singles", type=int, default=20, help="one-image calls per runtime per round")
    parser.add_argument("--agreement", type=int, default=256, help="photos compared with TensorFlow")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.singles, args.agreement = 2, 5, 64

    import keras

    started = time.perf_counter()
    folder = PROJECT_ROOT / "artifacts"  # the Keras model, whatever was exported from it (older builds too)
    manifest = json.loads((folder / "manifest.json").read_text())
    keras_model = keras.models.load_model(folder / manifest["files"]["model"]["path"], compile=False)
    spec = PreprocessSpec(**manifest["params"]["preprocess"])
    paths = np.load(folder / manifest["files"]["image_paths"]["path"])
    rng = np.random.default_rng(args.seed)
    chosen = [str(PROJECT_ROOT / p) for p in rng.choice(paths, max(args.agreement, BATCH), replace=False)]
    images = np.concatenate(list(iter_input_batches(chosen, spec, BATCH)))

    with tempfile.TemporaryDirectory(prefix="lookalike-runtimes-") as tmp:
        runners, skipped = build_runners(keras_model, Path(tmp), images[:BATCH])
        names = list(runners)
        for run in runners.values():  # warm up both shapes
            run(images[:BATCH])
            run(images[:1])
        batch_s = {name: [] for name in names}
        single_ms = {name: [] for name in names}
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[: round_ % len(names)]
            batch = images[(round_ * BATCH) % (len(images) - BATCH + 1):][:BATCH]
            for name in order:
                began = time.perf_counter()
                runners[name](batch)
                batch_s[name].append(time.perf_counter() - began)
                for i in range(args.singles):
                    one = images[(round_ * args.singles + i) % len(images)][None]
                    began = time.perf_counter()
                    runners[name](one)
                    single_ms[name].append((time.perf_counter() - began) * 1e3)
        agreement_images = images[: args.agreement]
        outputs = {name: np.concatenate([run(agreement_images[i : i + BATCH])
                                         for i in range(0, len(agreement_images), BATCH)])
                   for name, run in runners.items()}
        sizes = {path.name: path.stat().st_size for path in Path(tmp).iterdir()}

    reference = outputs[names[0]].astype(np.float64)
    rows = []
    for name in names:
        out = outputs[name].astype(np.float64)
        cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
        single = summary_ms(single_ms[name])
        rows.append({"runtime": name, "batch32_images_per_s": round(BATCH / float(np.median(batch_s[name])), 1),
                     "one_image_p50_ms": single["p50_ms"], "one_image_p95_ms": single["p95_ms"],
                     "max_abs_diff": float(f"{np.abs(out - reference).max():.2g}"),
                     "min_cosine": f"{cosine.min():.7f}"})
    print_table(rows)
    for name, how in skipped.items():
        print(f"skipped {name}: not installed ({how})")
    print(f"model files: {sizes}")
    write_results("runtimes_quick" if args.quick else "runtimes", {
        "rounds": args.rounds, "singles_per_round": args.singles, "batch": BATCH, "agreement_photos": args.agreement,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TensorFlow's default)"),
        "rows": rows, "skipped": skipped, "model_bytes": sizes, "versions": runtime_versions(),
        "seconds": round(time.perf_counter() - started, 1)})


def runtime_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "tf2onnx", "onnx", "openvino"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


if __name__ == "__main__":
    main()
