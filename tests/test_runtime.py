"""Inference through the exported models (lookalike.model.runtime, LiteRT): agreement with Keras, no TensorFlow
in the query path, the export check that refuses a disagreeing model, thread safety, pinned files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.artifacts import ArtifactMismatchError, build_id, resolve_build, sha256_file
from lookalike.evaluation.metrics import evaluate_retrieval
from lookalike.model.preprocessing import PreprocessSpec
from lookalike.model.runtime import EXPORT_MIN_COSINE, EmbeddingRuntime, agreement, available_cores, check_images
from lookalike.model.views import iter_input_batches
from lookalike.search.engine import Searcher

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build(tiny_project: Path) -> dict:
    folder, manifest = resolve_build(tiny_project / "artifacts")
    spec = PreprocessSpec(**manifest["params"]["preprocess"])
    paths = [str(tiny_project / p) for p in np.load(folder / manifest["files"]["image_paths"]["path"])]
    return {"folder": folder, "manifest": manifest, "spec": spec, "paths": paths,
            "file": lambda name: folder / manifest["files"][name]["path"],
            "images": np.concatenate(list(iter_input_batches(paths, spec, 16)))}


def test_the_build_pins_both_exported_models(build: dict) -> None:
    for name, file in (("runtime_model", "model.tflite"), ("runtime_backbone", "backbone.tflite")):
        entry = build["manifest"]["files"][name]
        assert entry["path"] == file and entry["sha256"] == sha256_file(build["folder"] / file)


def test_exported_model_matches_keras_and_keeps_every_metric(build: dict, tiny_project: Path) -> None:
    """The agreement the issue asks for, on the tiny catalogue (the full 5k is checked by hand: README)."""
    from lookalike.model.network import keras_outputs, load_embedding_model

    keras_model = load_embedding_model(build["file"]("model"))
    reference = keras_outputs(keras_model, build["images"])
    exported = EmbeddingRuntime(build["file"]("runtime_model"))(build["images"])
    found = agreement(reference, exported)
    assert found["min_cosine"] >= EXPORT_MIN_COSINE and found["max_abs_diff"] < 1e-4, found
    stored = np.load(build["file"]("embeddings"))  # the build's: the head on the runtime's backbone features
    assert agreement(stored, exported)["min_cosine"] >= EXPORT_MIN_COSINE
    table = pd.read_csv(build["file"]("items"))  # labels and the test split from the build's items
    labels = table[build["manifest"]["params"]["label_column"]].to_numpy()
    queries = np.flatnonzero(table["split"].to_numpy() == "test")
    keras_metrics, _ = evaluate_retrieval(reference, labels, queries)
    runtime_metrics, _ = evaluate_retrieval(exported, labels, queries)
    assert keras_metrics.keys() == runtime_metrics.keys()
    for name, value in keras_metrics.items():
        assert abs(runtime_metrics[name] - value) <= 0.002, (name, value, runtime_metrics[name])


def test_the_exported_backbone_matches_the_cached_features(build: dict, tiny_project: Path) -> None:
    backbone = EmbeddingRuntime(build["file"]("runtime_backbone"))
    features = np.load(tiny_project / "artifacts/features.npy")[0]
    assert agreement(features, backbone(build["images"]))["max_abs_diff"] < 1e-5


def test_query_path_imports_no_tensorflow(tiny_project: Path) -> None:
    code = (
        "import sys\n"
        "from lookalike.search.engine import Searcher\n"
        f"searcher = Searcher.load({str(tiny_project / 'artifacts')!r}, root={str(tiny_project)!r})\n"
        "response = searcher.search(searcher.resolve_path(3), k=5)\n"
        "assert response.matches[0].id == int(searcher.items['id'].iat[3]), response\n"
        "from lookalike.evaluation.folder import evaluate_folder\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
        "sorted(m for m in sys.modules if 'tensorflow' in m)[:5]\n"
        "print('ok', searcher.model.threads)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok", str(available_cores())]


def test_threads_are_set_explicitly(build: dict, tiny_project: Path) -> None:
    assert EmbeddingRuntime(build["file"]("runtime_model")).threads == available_cores()
    one = Searcher.load(tiny_project / "artifacts", root=tiny_project, threads=1)
    assert one.model.threads == 1
    with pytest.raises(ValueError, match="at least 1"):
        EmbeddingRuntime(build["file"]("runtime_model"), threads=-2)


def test_one_runtime_shared_by_threads_gives_the_sequential_results(build: dict) -> None:
    """Batch sizes that differ between threads: the interpreter is resized under the lock, never mid-call."""
    runtime = EmbeddingRuntime(build["file"]("runtime_model"))
    images = build["images"]
    jobs = [images[i : i + size] for size in (1, 3, 16) for i in range(0, 48, size)][:40]
    expected = [runtime(job) for job in jobs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for index in range(offset, len(jobs), 4):
                results[index] = runtime(jobs[index])
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, want in enumerate(expected):
        np.testing.assert_allclose(results[index], want, rtol=0, atol=1e-6)


def test_runtime_refuses_a_wrong_input_shape(build: dict) -> None:
    runtime = EmbeddingRuntime(build["file"]("runtime_model"))
    size = build["spec"].image_size
    with pytest.raises(ValueError, match="takes"):
        runtime(np.zeros((1, size + 1, size, 3), np.float32))
    assert runtime(np.zeros((0, size, size, 3), np.float32)).shape == (0, runtime.output_shape[0])


def _copy_build(build: dict, tmp_path: Path) -> Path:
    target = tmp_path / "artifacts"
    shutil.copytree(build["folder"], target)
    return target


@pytest.mark.parametrize("name", ["model.tflite", "backbone.tflite"])
def test_searcher_refuses_a_changed_exported_model(build: dict, tiny_project: Path, tmp_path: Path,
                                                   name: str) -> None:
    artifacts = _copy_build(build, tmp_path)
    with (artifacts / name).open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(ArtifactMismatchError, match=name.replace(".", r"\.")):
        Searcher.load(artifacts, root=tiny_project)


def test_searcher_refuses_a_model_for_another_input_size(build: dict, tiny_project: Path, tmp_path: Path) -> None:
    artifacts = _copy_build(build, tmp_path)
    manifest = json.loads((artifacts / "manifest.json").read_text())
    manifest["params"]["preprocess"]["image_size"] += 32
    manifest["build_id"] = build_id(manifest)
    (artifacts / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="model input .* does not match the manifest's image_size"):
        Searcher.load(artifacts, root=tiny_project)


def test_export_is_reproducible_and_refuses_a_disagreeing_model(build: dict, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The same Keras model exports to the same bytes (a killed stage rerun leaves DVC's hashes alone); an
    export that does not compute what Keras computes (here: a converter handed other weights) is refused,
    and nothing is written over the previous file."""
    from lookalike.model import network as model_module

    keras_model = model_module.load_embedding_model(build["file"]("model"))
    photos = check_images(build["paths"], build["spec"], count=8)
    first, second = tmp_path / "a.tflite", tmp_path / "b.tflite"
    found = model_module.export_runtime_model(keras_model, first, photos)
    model_module.export_runtime_model(keras_model, second, photos)
    assert first.read_bytes() == second.read_bytes() == build["file"]("runtime_model").read_bytes()
    assert found["min_cosine"] >= EXPORT_MIN_COSINE

    altered = model_module.load_embedding_model(build["file"]("model"))
    dense = altered.get_layer("head").get_layer("dense_type")  # the type sub-space's projection
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel[:, ::-1].copy(), bias])  # another embedding: same shapes, other directions
    other_flatbuffer = model_module.runtime_flatbuffer(altered)
    monkeypatch.setattr(model_module, "runtime_flatbuffer", lambda _model: other_flatbuffer)
    before = first.read_bytes()
    with pytest.raises(model_module.ExportMismatchError, match=r"disagrees with the Keras model on 8 catalogue "
                                                               r"photos: min cosine .* < 0\.9999"):
        model_module.export_runtime_model(keras_model, first, photos, "embedding model")
    assert first.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []
