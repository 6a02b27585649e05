"""lookalike.model.weights (torch-free legacy .pth reader) and the Keras EfficientNet-Lite port.

Reference values come from tests/fixtures/efficientnet_lite_reference.npz, made with torch
(see tests/fixtures/README.md); torch itself is never imported here.
"""

from __future__ import annotations

import pickle
import shlex
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lookalike.model.backbones import build_efficientnet_lite, lite_weights_path, load_lite_weights
from lookalike.model.weights import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    WeightsFormatError,
    read_legacy_state_dict,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "efficientnet_lite_reference.npz"
MODELS = {"lite0": ("efficientnet_lite0", 224), "lite2": ("efficientnet_lite2", 260)}
# fixture key suffix -> torch state_dict key
STATE_KEYS = {
    "conv_stem_weight": "_conv_stem.weight",
    "blocks_15_bn1_running_var": "_blocks.15._bn1.running_var",
    "fc_bias": "_fc.bias",
}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def lite_states() -> dict[str, dict[str, np.ndarray]]:
    return {prefix: read_legacy_state_dict(lite_weights_path(name)) for prefix, (name, _) in MODELS.items()}


def reference_input(size: int) -> np.ndarray:
    """The input recipe of tests/fixtures/README.md."""
    return np.random.default_rng(0).uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)


# ---------------------------------------------------------------- a writer for legacy torch files
# Raw protocol-2 pickle opcodes, so no torch (and no fake torch module) is needed.


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(number: int) -> bytes:
    return b"J" + struct.pack("<i", number)


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_ordered_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    body = op_global("collections", "OrderedDict") + b")R"
    return body + (b"(" + b"".join(k + v for k, v in items) + b"u" if items else b"")


def as_pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def op_tensor(storage_type: str, key: str, numel: int, offset: int, shape: tuple, stride: tuple) -> bytes:
    persistent_id = op_tuple(op_str("storage"), op_global("torch", storage_type), op_str(key), op_str("cpu"),
                             op_int(numel), b"N") + b"Q"
    arguments = op_tuple(persistent_id, op_int(offset), op_tuple(*map(op_int, shape)),
                         op_tuple(*map(op_int, stride)), b"\x89", op_ordered_dict([]))
    return op_global("torch._utils", "_rebuild_tensor_v2") + arguments + b"R"


def legacy_header() -> bytes:
    sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, sys_info))


def legacy_file(tensors: dict[str, tuple], storages: dict[str, tuple[str, np.ndarray]]) -> tuple[bytes, int]:
    """(file bytes, length of everything before the raw storages).

    tensors: name -> (storage key, offset, shape, stride); storages: key -> (storage type, flat array).
    """
    entries = []
    for name, (key, offset, shape, stride) in tensors.items():
        storage_type, flat = storages[key]
        entries.append((op_str(name), op_tensor(storage_type, key, flat.size, offset, shape, stride)))
    keys = sorted(storages)
    prefix = legacy_header() + as_pickle(op_ordered_dict(entries)) + pickle.dumps(keys, protocol=2)
    raw = b"".join(struct.pack("<q", storages[k][1].size) + storages[k][1].tobytes() for k in keys)
    return prefix + raw, len(prefix)


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("prefix", ["lite0", "lite2"])
@pytest.mark.parametrize("suffix", sorted(STATE_KEYS))
def test_reader_matches_torch_tensors_exactly(reference, lite_states, prefix, suffix):
    got = lite_states[prefix][STATE_KEYS[suffix]]
    expected = reference[f"{prefix}_{suffix}"]
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_reader_returns_owned_writeable_arrays(lite_states):
    state = lite_states["lite0"]
    assert len(state) == 296  # 296 tensors in efficientnet-lite0-57934424.pth
    weight = state["_conv_stem.weight"]
    assert weight.flags.owndata
    assert weight.flags.writeable
    weight_again = read_legacy_state_dict(lite_weights_path("efficientnet_lite0"))["_conv_stem.weight"]
    assert not np.shares_memory(weight, weight_again)


def test_reader_returns_c_contiguous_arrays(lite_states):
    strided = [name for name, array in lite_states["lite0"].items() if not array.flags.c_contiguous]
    assert strided == []


def test_reader_handles_offsets_strides_and_dtypes(tmp_path):
    shared = np.arange(12, dtype=np.float32)
    storages = {"0": ("FloatStorage", shared), "1": ("LongStorage", np.array([7, -3, 2**40], dtype=np.int64)),
                "2": ("HalfStorage", np.array([0.5, -2.0], dtype=np.float16))}
    tensors = {
        "matrix": ("0", 0, (3, 4), (4, 1)),
        "transposed": ("0", 0, (4, 3), (1, 4)),  # a view of the same storage, non-contiguous
        "tail": ("0", 10, (2,), (1,)),
        "longs": ("1", 0, (3,), (1,)),
        "halves": ("2", 0, (2,), (1,)),
        "scalar": ("1", 1, (), ()),
    }
    data, _ = legacy_file(tensors, storages)
    path = tmp_path / "small.pth"
    path.write_bytes(data)
    state = read_legacy_state_dict(path)
    assert list(state) == list(tensors)  # order kept
    np.testing.assert_array_equal(state["matrix"], shared.reshape(3, 4))
    np.testing.assert_array_equal(state["transposed"], shared.reshape(3, 4).T)
    np.testing.assert_array_equal(state["tail"], [10, 11])
    np.testing.assert_array_equal(state["longs"], [7, -3, 2**40])
    assert state["longs"].dtype == np.int64
    np.testing.assert_array_equal(state["halves"], np.array([0.5, -2.0], dtype=np.float16))
    assert state["scalar"].shape == ()
    assert state["scalar"] == -3


def payload(module: str, name: str, argument: str) -> bytes:
    """A pickle that calls module.name(argument) when loaded by an ordinary unpickler."""
    return as_pickle(op_global(module, name) + op_str(argument) + b"\x85R")  # TUPLE1, REDUCE


def command_payloads(marker: Path) -> dict[str, bytes]:
    return {
        "os.system": payload("os", "system", f"touch {shlex.quote(str(marker))}"),
        "posix.system": payload("posix", "system", f"touch {shlex.quote(str(marker))}"),
        "builtins.exec": payload("builtins", "exec", f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("target", ["os.system", "posix.system", "builtins.exec"])
def test_payloads_are_live_under_plain_pickle(tmp_path, target):
    # guards the refusal tests below: these bytes really do run code when unpickled naively
    marker = tmp_path / "ran"
    pickle.loads(command_payloads(marker)[target])
    assert marker.exists()


@pytest.mark.parametrize("target", ["os.system", "posix.system", "builtins.exec"])
@pytest.mark.parametrize("position", ["tree", "sys_info"])
def test_reader_refuses_a_pickle_with_a_forbidden_global(tmp_path, target, position):
    marker = tmp_path / "ran"
    evil = command_payloads(marker)[target]
    magic = pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2) + pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2)
    if position == "tree":
        data = legacy_header() + evil + pickle.dumps([], protocol=2)
    else:
        data = magic + evil + as_pickle(op_ordered_dict([])) + pickle.dumps([], protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(WeightsFormatError, match=f"refusing to unpickle global {target}"):
        read_legacy_state_dict(path)
    assert not marker.exists()


def test_reader_refuses_a_zip_file(tmp_path):
    path = tmp_path / "new_format.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(WeightsFormatError, match="zip"):
        read_legacy_state_dict(path)


def test_reader_refuses_a_file_truncated_in_the_storages(tmp_path):
    data = lite_weights_path("efficientnet_lite0").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightsFormatError, match="truncated"):
        read_legacy_state_dict(path)


def test_reader_refuses_a_file_truncated_in_the_state_dict_pickle(tmp_path):
    data = lite_weights_path("efficientnet_lite0").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[:2000])  # past the header, inside the tree pickle
    with pytest.raises(WeightsFormatError):
        read_legacy_state_dict(path)


def test_reader_refuses_a_file_truncated_in_a_storage_length(tmp_path):
    data, prefix = legacy_file({"w": ("0", 0, (2,), (1,))}, {"0": ("FloatStorage", np.ones(2, np.float32))})
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: prefix + 4])
    with pytest.raises(WeightsFormatError):
        read_legacy_state_dict(path)


def test_reader_refuses_a_tensor_larger_than_its_storage(tmp_path):
    data, _ = legacy_file({"w": ("0", 0, (6,), (1,))}, {"0": ("FloatStorage", np.ones(4, np.float32))})
    path = tmp_path / "overrun.pth"
    path.write_bytes(data)
    with pytest.raises(WeightsFormatError):
        read_legacy_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", pickle.dumps(12345, protocol=2) * 3])
def test_reader_refuses_files_that_are_not_legacy_torch_files(tmp_path, content):
    path = tmp_path / "bogus.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsFormatError):
        read_legacy_state_dict(path)


def test_reader_refuses_an_entry_that_is_not_a_tensor(tmp_path):
    data = legacy_header() + as_pickle(op_ordered_dict([(op_str("n"), op_int(3))])) + pickle.dumps([], protocol=2)
    path = tmp_path / "odd.pth"
    path.write_bytes(data)
    with pytest.raises(WeightsFormatError, match="not a tensor"):
        read_legacy_state_dict(path)


def test_reader_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_legacy_state_dict(tmp_path / "nowhere.pth")


# ---------------------------------------------------------------- the Keras port


def test_reference_input_recipe_matches_the_fixture(reference):
    for prefix, (_, size) in MODELS.items():
        np.testing.assert_array_equal(reference_input(size).reshape(-1)[:8], reference[f"{prefix}_input_head"])


# The README's bound. Measured (tensorflow-cpu 2.21, 2 cores): max abs difference 1.05e-5 (lite0) and
# 0.95e-5 (lite2) on logits up to 7.5, float32 round-off (0.83e-5 / 0.49e-5 with TF_ENABLE_ONEDNN_OPTS=0).
# 1e-3 let real bugs through: the classifier's weights rounded to float16 move the logits by 8.6e-4.
LOGITS_ATOL = 2e-5


@pytest.mark.parametrize("prefix", ["lite0", "lite2"])
def test_keras_port_logits_match_torch(reference, lite_states, prefix):
    """The port matches PyTorch to float32 round-off (the README's 2e-5), so a subtly wrong layer fails."""
    name, size = MODELS[prefix]
    model = build_efficientnet_lite(name, size, include_top=True)
    load_lite_weights(model, lite_states[prefix])
    logits = np.asarray(model(reference_input(size), training=False))
    assert logits.shape == (2, 1000)
    difference = float(np.abs(logits - reference[f"{prefix}_logits"]).max())
    assert difference <= LOGITS_ATOL, f"max abs logit difference {difference:.2e} > {LOGITS_ATOL:.0e}"


def test_feature_model_loads_without_the_classifier(lite_states):
    model = build_efficientnet_lite("efficientnet_lite0", 64)
    load_lite_weights(model, lite_states["lite0"])  # _fc.* is not expected without the top
    assert tuple(model.output_shape) == (None, 2, 2, 1280)


def test_loading_refuses_weights_the_model_does_not_use(lite_states):
    model = build_efficientnet_lite("efficientnet_lite0", 64)
    state = dict(lite_states["lite0"], **{"_extra_head.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="_extra_head.weight"):
        load_lite_weights(model, state)
