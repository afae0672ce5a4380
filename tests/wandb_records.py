"""Reading back what an offline W&B run wrote (no cloud here): the records of a run-<id>.wandb file.

The file is a LevelDB-style log: a 7-byte header (":W&B", 2 bytes, a version byte), then 32 KiB
blocks of records, each with a 7-byte header (CRC32, length, type: 1 full, 2 first, 3 middle,
4 last); a block tail shorter than 7 bytes is padding. Each assembled record is a protobuf
wandb_internal_pb2.Record (see ../shared/reference/hpc.md).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> list[Any]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < HEADER:  # padding at the end of a block
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            break
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def run_summary(path: Path) -> dict[str, Any]:
    """run: group, job_type, name, tags, config (top-level keys); summary and history values."""
    info: dict[str, Any] = {"config": {}, "summary": {}, "history": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info.update(group=run.run_group, job_type=run.job_type, name=run.display_name, id=run.run_id)
            info["tags"] = list(run.tags)
            for item in run.config.update:
                info["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                info["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                info["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                info["history"].setdefault(_key(item), []).append(json.loads(item.value_json))
    return info
