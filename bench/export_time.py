"""LiteRT conversion time: the project's direct conversion (lookalike.model.network.runtime_flatbuffer, one
traced function) against the SavedModel round trip it replaced (Keras ``model.export``, then
``TFLiteConverter.from_saved_model``), on the two models a build converts: the pretrained backbone with its
pooling and colour descriptor (features stage) and the trained model of ``artifacts/`` (embed stage).
Interleaved, so both see the same load; each converted file is run on the same random batch and compared
with Keras (max abs difference).

    python -m bench.export_time            # 3 rounds per model, about 2 min
    python -m bench.export_time --quick    # 1 round
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, print_table, versions, write_results


def saved_model_flatbuffer(model) -> bytes:
    """The conversion as it was: a SavedModel written to disk, read back by the converter."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(folder).convert()


def max_difference(flatbuffer: bytes, reference: np.ndarray, batch: np.ndarray) -> float:
    from lookalike.model.runtime import EmbeddingRuntime

    with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
        file.write(flatbuffer)
        file.flush()
        return float(np.abs(EmbeddingRuntime(file.name)(batch) - reference).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round per model")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds

    from lookalike.model.network import (
        build_feature_model,
        keras_outputs,
        load_embedding_model,
        new_backbone,
        runtime_flatbuffer,
    )
    from lookalike.params import load_params, preprocess_spec

    params = load_params(ROOT / "params.yaml")
    spec = preprocess_spec(params)
    colour = spec.normalisation if params["model"]["colour_descriptor"] else None
    backbone = new_backbone(params["backbone"]["name"], spec.image_size, params["backbone"]["weights"])
    models = {"backbone (features stage)": build_feature_model(backbone, colour)}
    trained = Path(ROOT / "artifacts/model.keras")
    if trained.exists():
        models["trained model (embed stage)"] = load_embedding_model(trained)
    batch = np.random.default_rng(0).uniform(-1, 1, (8, spec.image_size, spec.image_size, 3)).astype(np.float32)
    ways = {"SavedModel round trip": saved_model_flatbuffer, "direct (runtime_flatbuffer)": runtime_flatbuffer}
    rows = []
    for name, model in models.items():
        reference = keras_outputs(model, batch)
        seconds = {way: [] for way in ways}
        differences = {}
        for _ in range(rounds):
            for way, convert in ways.items():
                started = time.perf_counter()
                flatbuffer = convert(model)
                seconds[way].append(time.perf_counter() - started)
                differences[way] = max_difference(flatbuffer, reference, batch)
        for way in ways:
            rows.append({"model": name, "conversion": way, "median_s": round(float(np.median(seconds[way])), 2),
                         "runs_s": [round(s, 2) for s in seconds[way]],
                         "max_abs_diff_vs_keras": float(f"{differences[way]:.2g}")})
        rows.append({"model": name, "conversion": "speed-up",
                     "median_s": round(float(np.median(seconds["SavedModel round trip"]))
                                       / float(np.median(seconds["direct (runtime_flatbuffer)"])), 2)})
    print_table(rows, ["model", "conversion", "median_s", "runs_s", "max_abs_diff_vs_keras"])
    write_results("export_time_quick" if args.quick else "export_time",
                  {"rounds": rounds, "rows": rows, "versions": versions("tensorflow", "keras")})


if __name__ == "__main__":
    main()
