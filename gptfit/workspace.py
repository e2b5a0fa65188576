"""`python -m gptfit.workspace <run or sweep dir> [--dry-run]`: the W&B workspace to read gptfit's runs in.

Builds the sections of gptfit/show/workspace.py (overview, memorization, membership, copying by decoding
setting, samples, and for a sweep its figures against each swept value) for the project and entity the runs
logged to. `--dry-run` writes the workspace as JSON into the folder and needs nothing else; without it the
workspace is saved to W&B (needs the optional extra, `pip install 'gptfit[workspace]'`, and an API key) and
its URL printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gptfit.cli import fail
from gptfit.errors import UserError
from gptfit.files import write_text_atomic
from gptfit.record import RunRecord
from gptfit.show.sweep import read_sweep, varying
from gptfit.show.workspace import spec, to_workspace

SPEC = "workspace.json"


def describe(folder: Path, name: str | None) -> dict:
    """The workspace for the run or sweep in `folder`, as data."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such run or sweep directory")
    runs = read_sweep(folder) if any((d / ".hydra").is_dir() for d in folder.iterdir() if d.is_dir()) else []
    runs = runs or [RunRecord.read(folder)]
    configured = [r for r in runs if r.has_config]
    if not configured:
        raise UserError(f"{folder}: no run with a config.yaml (or summary.json) inside; give a run or sweep folder")
    logger = configured[0].config.logger
    swept = [k for k in varying(runs)[0] if not k.split(".")[-1].endswith("seed")] if len(runs) > 1 else []
    return spec(name or f"gptfit: {folder.name}", logger.entity, logger.project, swept)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gptfit.workspace", description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a run folder, or a multirun's folder (outputs/multiruns/<stamp>)")
    ap.add_argument("--name", help="the workspace's name (default: gptfit: <folder name>)")
    ap.add_argument("--dry-run", action="store_true", help=f"write the workspace to <folder>/{SPEC}, save nothing")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        described = describe(Path(args.folder), args.name)
    except UserError as e:
        fail([str(e)])
    if args.dry_run:
        out = Path(args.folder) / SPEC
        write_text_atomic(out, json.dumps(described, indent=2) + "\n")
        print(f"workspace: {out} ({len(described['sections'])} sections)")
        return
    import wandb

    try:
        workspace = to_workspace(described, entity=described["entity"] or wandb.Api().default_entity)
    except ImportError:
        fail(["saving a workspace needs wandb-workspaces: pip install 'gptfit[workspace]' (or use --dry-run)"])
    except wandb.errors.UsageError as e:  # no API key
        fail([f"saving a workspace needs W&B: {str(e).splitlines()[0]} (wandb login; or use --dry-run)"])
    workspace.save()  # W&B's server: needs an API key (wandb login)
    print(f"workspace: {workspace.url}")


if __name__ == "__main__":
    main()
