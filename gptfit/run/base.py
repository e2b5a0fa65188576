"""The base model of fine-tuning (model=base): gptfit's GPT pretrained on general text by the run that
`model.base` names (+experiment=pretrain_base), trained into data.cache_dir on first use and reused after.

It is cached under a hash of what makes its weights: its corpus (the documents' hash: the standard library's
docstrings differ between Python versions) and its config, less what cannot change the weights (where it
writes and logs, the evaluation, threads, checkpoints). A cached folder is used only when its marker is there
and names the same hash and its weights load; a corrupt or half-written one is trained again, never loaded.
A build happens in a folder of its own and is renamed into place whole; a file lock makes the parallel jobs
of a sweep wait for one build instead of each starting its own.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from gptfit.config import Config
from gptfit.data.corpus import corpus_hash
from gptfit.data.sources import load_documents
from gptfit.errors import UserError
from gptfit.files import FINAL_MODEL, write_json_atomic
from gptfit.keys import VAL_BPB, VAL_LOSS
from gptfit.model.loading import load_model
from gptfit.run.folder import release_run_dir

log = logging.getLogger(__name__)
MARKER = "base.json"  # written last: a folder without it was never finished
# Config keys that do not change the weights a base run trains, left out of its hash.
NOT_WEIGHTS = {"": ("name", "run_dir", "logger", "eval", "decoding"), "data": ("cache_dir",)}
NOT_WEIGHTS["train"] = ("device", "threads", "resume", "compile", "save_every", "save_total_limit", "eval_every")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def changed(section: Any) -> dict:
    """The fields of a config section that differ from its own schema's defaults (a nested section against
    its schema's; one that is off by default, whole), so that a field added at its default changes nothing."""
    default = type(section)()
    out = {}
    for f in dataclasses.fields(section):
        mine, theirs = getattr(section, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(mine) and dataclasses.is_dataclass(theirs):
            part = changed(mine)
            if part:
                out[f.name] = part
        elif mine != theirs:
            out[f.name] = _plain(mine)
    return out


def weight_fields(base: Config) -> dict:
    """What shapes a base run's weights: its config's fields that differ from the defaults, less NOT_WEIGHTS."""
    fields = changed(base)
    for section, keys in NOT_WEIGHTS.items():
        node = fields.get(section, {}) if section else fields
        for key in keys:
            node.pop(key, None)
        if section and section in fields and not fields[section]:
            del fields[section]
    return fields


def base_key(base: Config) -> str:
    """The hash a base run is cached under: its corpus and the config fields that shape its weights."""
    text = json.dumps(
        {"corpus": corpus_hash(load_documents(base.data, base.data.cache_dir)), "config": weight_fields(base)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(folder: Path, key: str) -> bool:
    """Whether `folder` holds a finished base of this key whose weights load."""
    try:
        if json.loads((folder / MARKER).read_text())["key"] != key:
            return False
        load_model(str(folder / FINAL_MODEL))
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return False
    return True


def ensure_base(base: Config, what: str = "model=base: the base model") -> Path:
    """The saved base model (its final/ folder), trained by `base`'s run first when no usable one is cached.
    Unlearning caches its source and retrained runs the same way (`what` names the run in the message)."""
    from gptfit.run.training import train  # the recipe imports this room's neighbours; only a build needs it

    key = base_key(base)
    folder = Path(base.data.cache_dir).expanduser() / "base" / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another job building the same base: wait for it, then reuse it
        if cached(folder, key):
            return folder / FINAL_MODEL
        if folder.exists():
            log.warning("the cached base model in %s is incomplete or corrupt: training it again", folder)
            shutil.rmtree(folder)
        building = folder.with_name(f"{key}.building")
        shutil.rmtree(building, ignore_errors=True)
        model = base.model
        print(
            f"{what}: training it first ({model.n_layer} layers x {model.n_embd}, "
            f"{base.train.max_steps} steps on data={base.data.source}); it is cached in {folder} and reused",
            file=sys.stderr,
            flush=True,
        )
        summary = train(dataclasses.replace(base, run_dir=str(building)))
        final = summary.get("final", {})
        record = {
            "key": key,
            VAL_LOSS: final.get(VAL_LOSS),
            VAL_BPB: final.get(VAL_BPB),
            "name": base.name,
        }
        write_json_atomic(building / MARKER, record)
        release_run_dir(building)
        os.replace(building, folder)
    return folder / FINAL_MODEL
