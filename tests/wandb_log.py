"""A reader of the `.wandb` file an offline W&B run leaves (`run-<id>.wandb`), for the tests that check what
reached W&B: what `wandb sync` would upload, read without a server. wandb ships no reader, so the tests own
this small one.

The file is a LevelDB-style log (github.com/google/leveldb/blob/main/doc/log_format.md): a 7-byte header
(":W&B", a 2-byte magic, a version byte), then blocks of 32 KiB holding chunks, each a 7-byte header
(checksum, length, type: full, first, middle or last) and its bytes; a block's tail shorter than a chunk
header is padding. Joined chunks are `wandb_internal_pb2.Record` protobuf messages.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # checksum, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    ident, _, _ = HEADER.unpack_from(data)
    assert ident == b":W&B", f"{path}: not a W&B transaction log"
    out, parts, pos = [], [], HEADER.size
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # the block's padding
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zeros: a preallocated tail, or the end
            pos += left
            continue
        chunk = data[pos + CHUNK.size : pos + CHUNK.size + length]
        pos += CHUNK.size + length
        if kind in (FULL, FIRST):
            parts = [chunk]
        else:
            parts.append(chunk)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            out.append(record)
    return out


def _value(item) -> object:
    return json.loads(item.value_json)


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _fold(items) -> dict:
    """Items into a dict: a media value (an image, a table) arrives as one item per field, under a nested key
    (`["mia/roc", "_type"]`), and folds back into one dict under its name."""
    out: dict = {}
    for item in items:
        if len(item.nested_key) > 1:
            out.setdefault(item.nested_key[0], {})["/".join(item.nested_key[1:])] = _value(item)
        else:
            out[_key(item)] = _value(item)
    return out


@dataclass
class WandbRun:
    """What an offline run holds, in the shape a reader checks."""

    run: pb.RunRecord | None = None
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # name -> MetricRecord
    artifacts: list[pb.ArtifactRecord] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def tags(self) -> list[str]:
        return list(self.run.tags)


def read_run(path: Path) -> WandbRun:
    """Every record of a `.wandb` file, folded into the run's config, history, summary and artifacts."""
    out = WandbRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
            _fold_config(out.config, record.run.config)
        elif kind == "config":
            _fold_config(out.config, record.config)
        elif kind == "history":
            out.history.append(_fold(record.history.item))
        elif kind == "summary":
            out.summary.update(_fold(record.summary.update))
            for item in record.summary.remove:
                out.summary.pop(_key(item), None)
        elif kind == "metric":
            out.metrics[record.metric.name or record.metric.glob_name] = record.metric
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def _fold_config(config: dict, record) -> None:
    for item in record.update:
        value = _value(item)
        config[_key(item)] = value.get("value", value) if isinstance(value, dict) else value
    for item in record.remove:
        config.pop(_key(item), None)


def find_run(folder: Path) -> WandbRun:
    """The one offline run under `folder` (a run folder's wandb/)."""
    files = sorted(Path(folder).rglob("run-*.wandb"))
    assert len(files) == 1, f"{folder}: {len(files)} .wandb files"
    return read_run(files[0])
