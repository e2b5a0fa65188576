"""One place that records a run: `metrics.jsonl`, `summary.json` and, when on, Weights & Biases.

`summary.json` is rewritten atomically after every evaluation, so it always describes the run as it
stands: `status` is `running` until the run ends `finished` or `failed` (with the error line).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from gptfit.config import LoggerConfig
from gptfit.files import METRICS, SAMPLES, SAMPLES_MD, SUMMARY, read_rows, write_json_atomic, write_text_atomic
from gptfit.run.sequence_log import SequenceLog
from gptfit.run.wandb_run import WandbLog, start_wandb

log = logging.getLogger(__name__)
PACKAGES = ("gptfit", "torch", "transformers", "tokenizers", "datasets", "hydra-core", "wandb", "numpy")
# Keys whose best value is their minimum; every key's last value is kept under "final".
LOWER_IS_BETTER = ("/loss", "/ppl", "/bpb")
SAMPLE_COLUMNS = [
    "step",
    "decoding",
    "params",
    "source",
    "prompt",
    "completion",
    "novel_8gram",
    "longest_copy_tokens",
    "copied",
]


def _md(text: str) -> str:
    """Text fit for one cell of a markdown table."""
    return text.replace("|", "\\|").replace("\n", "⏎ ")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class Tracker:
    """Rank 0's record of a run: metrics.jsonl, summary.json, the samples, sequences.parquet and W&B."""

    writes = True

    def __init__(
        self,
        run_dir: Path,
        logger: LoggerConfig,
        name: str,
        config: dict,
        info: dict,
        resume_step: int | None = None,
        wandb_id: str | None = None,
    ):
        self.run_dir = run_dir
        self.metrics_path = run_dir / METRICS
        self.summary_path = run_dir / SUMMARY
        self.start = time.time()
        self.rows: list[dict] = []
        if resume_step is not None:
            # Rows after the checkpoint we resume from would be written again: cut them, so that every
            # evaluated step appears once. The file is rewritten atomically.
            rows, torn = read_rows(self.metrics_path)
            if torn:
                log.warning(
                    "metrics.jsonl: dropped %d torn line(s) at its end, cut by the kill that stopped the "
                    "run; the resumed run evaluates those steps again",
                    torn,
                )
            self.rows = [r for r in rows if r.get("step", 0) <= resume_step]
            write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.rows))
            kept = [r for r in read_rows(run_dir / SAMPLES)[0] if r.get("step", 0) <= resume_step]
            write_text_atomic(run_dir / SAMPLES, "".join(json.dumps(r) + "\n" for r in kept))
        else:
            self.metrics_path.write_text("")
            (run_dir / SAMPLES).write_text("")
        self.summary: dict[str, Any] = {
            "status": "running",
            "name": name,
            "run_dir": str(run_dir),
            "git_commit": git_commit(),
            "versions": package_versions(),
            **info,
            "config": config,
        }
        started = time.time()
        run = start_wandb(logger, run_dir, name, config, resume_id=wandb_id)
        self.wandb = WandbLog(run) if run is not None else None
        self._table = None
        self.sequences = SequenceLog(run_dir, resume_step)
        if run is not None:
            self.summary["wandb_init_s"] = round(time.time() - started, 2)  # a stalled network shows here
            self.summary["wandb_id"] = run.id
            self.summary["wandb_mode"] = run.settings.mode
            # Where to look: the page online, or the folder that `wandb sync` uploads later.
            self.summary["wandb_url"] = run.url
            self.summary["wandb_dir"] = str(Path(run.dir).parent)
            # What a user charts against: parameters, data sizes, hashes (summary.json's facts).
            run.config.update({"derived": info}, allow_val_change=True)
            if wandb_id and run.id != wandb_id:  # offline runs cannot be resumed: the new part names the old
                run.config.update({"resumes_wandb_run": wandb_id, "resumes_from_step": resume_step})
            if resume_step is not None:
                run.summary["resumed_from_step"] = resume_step
        self._write_summary()

    def log(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.row(row)
        self._write_summary()

    def log_sequences(self, table, final: bool) -> None:
        """One evaluation's per-sequence table into sequences.parquet; at the last one, to W&B as a Table."""
        self.sequences.append(table)
        if final and self.wandb is not None:
            import wandb

            shown = table.drop_columns(["tokens"]).to_pandas()  # the token ids are in the parquet file
            self.wandb.stage({"sequences": wandb.Table(dataframe=shown)})

    def log_samples(self, samples: list) -> None:
        """Append samples to samples.md, samples.jsonl (with their token ids) and the run's W&B table (one
        incremental table, no new versions)."""
        if not samples:
            return
        with open(self.run_dir / SAMPLES, "a") as f:
            f.writelines(json.dumps(dataclasses.asdict(s)) + "\n" for s in samples)
        lines = [
            f"\n## step {samples[0].step}\n",
            "| decoding | params | source | prompt | completion | copy |",
            "|---|---|---|---|---|---|",
        ]
        for s in samples:
            cells = [
                s.decoding,
                s.params,
                s.source,
                _md(s.prompt),
                _md(s.completion),
                f"{s.longest_copy_tokens} tok" + (" (copied)" if s.copied else ""),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        with open(self.run_dir / SAMPLES_MD, "a") as f:
            f.write("\n".join(lines) + "\n")
        if self.wandb is not None:
            import wandb

            if self._table is None:
                self._table = wandb.Table(columns=SAMPLE_COLUMNS, log_mode="INCREMENTAL")
            for s in samples:
                self._table.add_data(*(getattr(s, c) for c in SAMPLE_COLUMNS))
            self.wandb.stage({"samples": self._table})

    def log_figures(self, figures: dict) -> None:
        """Matplotlib figures (closed here) or image files, to W&B as images in the current evaluation's row."""
        if self.wandb is not None:
            import wandb

            self.wandb.stage({k: wandb.Image(f if not isinstance(f, Path) else str(f)) for k, f in figures.items()})
        for fig in figures.values():
            if not isinstance(fig, Path):
                plt.close(fig)

    def log_html(self, name: str, path: Path) -> None:
        """A self-contained page to W&B (wandb.Html, without W&B's own styles)."""
        if self.wandb is not None:
            import wandb

            self.wandb.stage({name: wandb.Html(path.read_text(), inject=False)})

    def log_inputs(self, train, val, tokenizer_dir: Path, lineage: dict) -> None:
        if self.wandb is not None:
            self.wandb.log_inputs(train, val, tokenizer_dir, lineage)

    def log_outputs(self, models: dict[str, Path], table: Path | None, lineage: dict) -> None:
        if self.wandb is not None:
            self.wandb.log_outputs(models, table, lineage)

    def update(self, **info) -> None:
        """Facts of the run as it goes (timings, the stop, the privacy spent): into summary.json and W&B's summary."""
        self.summary.update(info)
        if self.wandb is not None:
            self.wandb.run.summary.update(info)
        self._write_summary()

    def best(self, key: str) -> dict | None:
        values = [(r[key], r["step"]) for r in self.rows if isinstance(r.get(key), (int, float))]
        values = [v for v in values if math.isfinite(v[0])]
        if not values:
            return None
        value, step = min(values)
        return {"value": value, "step": step}

    def _write_summary(self) -> None:
        if self.rows:
            final = self.rows[-1]
            self.summary["final"] = final
            self.summary["best"] = {k: self.best(k) for k in final if k.endswith(LOWER_IS_BETTER)}
            if self.wandb is not None:
                self.wandb.best(self.rows)
        self.summary["wall_time_s"] = round(time.time() - self.start, 2)
        write_json_atomic(self.summary_path, self.summary)

    def finish(self, status: str, error: str | None = None) -> None:
        self.summary["status"] = status
        if error:
            self.summary["error"] = error
        self._write_summary()
        if self.wandb is not None:
            timings = {k: v for k, v in self.summary.items() if k.endswith("_s") and not k.startswith("wandb")}
            self.wandb.finish(status, {"status": status, **timings})
            self.wandb = None


class NoTracker:
    """The tracker of the ranks other than 0 of a multi-process run: it keeps and writes nothing (rank 0's
    Tracker writes the run)."""

    writes = False
    wandb = None

    def __init__(self):
        self.rows: list[dict] = []
        self.summary: dict[str, Any] = {}

    def log(self, row: dict) -> None:
        pass

    def log_sequences(self, table, final: bool) -> None:
        pass

    def log_samples(self, samples: list) -> None:
        pass

    def log_figures(self, figures: dict) -> None:
        pass

    def log_html(self, name: str, path: Path) -> None:
        pass

    def log_inputs(self, train, val, tokenizer_dir: Path, lineage: dict) -> None:
        pass

    def log_outputs(self, models: dict[str, Path], table: Path | None, lineage: dict) -> None:
        pass

    def update(self, **info) -> None:
        pass

    def best(self, key: str) -> dict | None:
        return None

    def finish(self, status: str, error: str | None = None) -> None:
        pass
