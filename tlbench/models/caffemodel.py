"""Caffe's binary files without Caffe: the layer blobs of a .caffemodel and the mean image of a
.binaryproto, read from the protobuf wire format with the few fields of caffe.proto they need
(BVLC/caffe src/caffe/proto/caffe.proto):

  NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, older files)
  LayerParameter    name = 1, blobs = 7
  V1LayerParameter  name = 4, blobs = 6
  BlobProto         num, channels, height, width = 1..4 (legacy shape), data = 5 (packed float),
                    shape = 7 (BlobShape: dim = 1, packed int64), double_data = 8 (packed double)

Caffe and its protobuf definitions are no longer maintained packages; the wire format is stable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tlbench.errors import WeightsError

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message: an int for varints, the bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == _BYTES:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            yield number, wire, buf[pos : pos + size]
            pos += size
        else:  # groups (3, 4) are not used by caffe.proto
            raise ValueError(f"unsupported wire type {wire} in field {number}")


def _packed_varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def read_blob(buf: memoryview) -> np.ndarray:
    """A BlobProto as a float32 array of its shape (the new `shape`, else num/channels/height/width)."""
    legacy: dict[int, int] = {}
    shape: list[int] = []
    data: np.ndarray | None = None
    for number, wire, value in _fields(buf):
        if number in (1, 2, 3, 4) and wire == _VARINT:
            legacy[number] = int(value)  # type: ignore[arg-type]
        elif number == 7 and wire == _BYTES:
            for dim_number, dim_wire, dim in _fields(value):  # type: ignore[arg-type]
                if dim_number == 1:
                    shape += _packed_varints(dim) if dim_wire == _BYTES else [int(dim)]  # type: ignore[arg-type]
        elif number in (5, 8) and wire == _BYTES:  # packed, as caffe.proto declares them
            data = np.frombuffer(value, dtype="<f4" if number == 5 else "<f8").astype(np.float32)
        elif number in (5, 8):
            raise ValueError("unpacked blob data: not written by Caffe, not supported")
    if data is None:
        return np.zeros((0,), dtype=np.float32)
    if not shape:
        shape = [legacy.get(n, 1) for n in (1, 2, 3, 4)] if legacy else [data.size]
    if int(np.prod(shape)) != data.size:
        raise ValueError(f"blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def _read(path: str | Path) -> memoryview:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    return memoryview(path.read_bytes())


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its blobs (weights, then bias), for every layer that has blobs, in file order."""
    layers: dict[str, list[np.ndarray]] = {}
    try:
        for number, wire, value in _fields(_read(path)):
            if wire != _BYTES or number not in (100, 2):
                continue
            name_field, blobs_field = (1, 7) if number == 100 else (4, 6)
            name, blobs = None, []
            for field, field_wire, item in _fields(value):  # type: ignore[arg-type]
                if field == name_field and field_wire == _BYTES:
                    name = bytes(item).decode()  # type: ignore[arg-type]
                elif field == blobs_field and field_wire == _BYTES:
                    blobs.append(read_blob(item))  # type: ignore[arg-type]
            if name is not None and blobs:
                layers[name] = blobs
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path} cannot be read as a Caffe model: {exc}") from exc
    if not layers:
        raise WeightsError(f"{path} holds no layer with weights: is it a .caffemodel (not a .prototxt)?")
    return layers


def read_binaryproto(path: str | Path) -> np.ndarray:
    """A Caffe mean file (one BlobProto): the mean image, (channels, height, width), in BGR order."""
    try:
        blob = read_blob(_read(path))
    except ValueError as exc:
        raise WeightsError(f"{path} cannot be read as a Caffe BlobProto: {exc}") from exc
    if blob.ndim == 4 and blob.shape[0] == 1:
        blob = blob[0]
    if blob.ndim != 3 or blob.shape[0] != 3:
        raise WeightsError(f"{path}: a mean image has shape (3, H, W), this blob has {blob.shape}")
    return blob
