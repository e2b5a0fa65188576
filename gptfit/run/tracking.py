"""One place that records a run: `metrics.jsonl`, `summary.json` and, when on, Weights & Biases.

`summary.json` is rewritten atomically after every evaluation, so it always describes the run as it
stands: `status` is `running` until the run ends `finished` or `failed` (with the error line).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import netrc
import os
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from gptfit import keys
from gptfit.config import LoggerConfig
from gptfit.files import METRICS, SAMPLES, SAMPLES_MD, SUMMARY, read_rows, write_json_atomic, write_text_atomic
from gptfit.run.sequence_log import SequenceLog

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


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb(
    logger: LoggerConfig,
    run_dir: Path,
    name: str,
    config: dict,
    resume_id: str | None = None,
    resume_step: int | None = None,
):
    """Start a W&B run (or return None when logging is off). Never blocks long on a missing network.

    A resumed run continues its W&B run when online. Offline runs cannot be resumed by the library: the
    resumed part is a new offline run in the same group, whose config names the run it continues."""
    if logger.backend != "wandb" or logger.mode == "disabled":
        return None
    if os.environ.get("WANDB_MODE") == "":  # set but empty: W&B would refuse it; it means "not set"
        del os.environ["WANDB_MODE"]
    import wandb  # here and below: about a second to import, which logger=none never pays

    mode = logger.mode
    if mode == "auto":
        mode = "online" if has_wandb_key() else "offline"
    kwargs = dict(
        project=logger.project,
        entity=logger.entity,
        group=logger.group or name,  # a run's resumed parts share the group
        tags=list(logger.tags),
        job_type=logger.job_type,
        name=name,
        dir=str(run_dir),
        config=config,
    )
    settings = wandb.Settings(init_timeout=float(logger.init_timeout), console="off", silent=True)
    try:
        resumes = dict(id=resume_id, resume="allow") if resume_id and mode == "online" else {}
        run = wandb.init(mode=mode, settings=settings, **kwargs, **resumes)
    except Exception as e:  # no network, bad key, service down: the run goes on offline
        if mode != "online":
            raise
        warnings.warn(
            f"W&B online init failed ({type(e).__name__}: {str(e).strip()[:120]}); logging offline, "
            "upload later with `wandb sync`",
            stacklevel=2,
        )
        mode = "offline"
        run = wandb.init(mode="offline", settings=settings, **kwargs)
    if resume_id and run.id != resume_id:
        run.config.update({"resumes_wandb_run": resume_id, "resumes_from_step": resume_step})
    run.define_metric("tokens_seen")
    run.define_metric("*", step_metric="tokens_seen")
    return run


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
        self.wandb = start_wandb(logger, run_dir, name, config, resume_id=wandb_id, resume_step=resume_step)
        self._table = None
        self.sequences = SequenceLog(run_dir, resume_step)
        if self.wandb is not None:
            self.summary["wandb_init_s"] = round(time.time() - started, 2)  # a stalled network shows here
            self.summary["wandb_id"] = self.wandb.id
            self.summary["wandb_mode"] = self.wandb.settings.mode
            # Where to look: the page online, or the folder that `wandb sync` uploads later.
            self.summary["wandb_url"] = self.wandb.url
            self.summary["wandb_dir"] = str(Path(self.wandb.dir).parent)
            if resume_step is not None:
                self.wandb.summary["resumed_from_step"] = resume_step
        self._write_summary()

    def log(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if v is not None})  # null: not estimable (summary.json)
        self._write_summary()

    def log_sequences(self, table, final: bool) -> None:
        """One evaluation's per-sequence table into sequences.parquet; at the last one, to W&B as a Table."""
        self.sequences.append(table)
        if final and self.wandb is not None:
            import wandb

            shown = table.drop_columns(["tokens"]).to_pandas()  # the token ids are in the parquet file
            self.wandb.log({"sequences": wandb.Table(dataframe=shown), "tokens_seen": self.rows[-1]["tokens_seen"]})

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
            self.wandb.log({"samples": self._table, "tokens_seen": self.rows[-1]["tokens_seen"] if self.rows else 0})

    def log_figures(self, figures: dict, tokens_seen: int) -> None:
        """Log matplotlib figures to W&B as images (and close them)."""
        if self.wandb is not None:
            import wandb

            self.wandb.log({**{k: wandb.Image(fig) for k, fig in figures.items()}, "tokens_seen": tokens_seen})
        for fig in figures.values():
            plt.close(fig)

    def log_html(self, name: str, path: Path) -> None:
        """A self-contained page to W&B (wandb.Html, without W&B's own styles)."""
        if self.wandb is not None:
            import wandb

            self.wandb.log(
                {
                    name: wandb.Html(path.read_text(), inject=False),
                    "tokens_seen": self.rows[-1]["tokens_seen"] if self.rows else 0,
                }
            )

    def update(self, **info) -> None:
        self.summary.update(info)
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
            self.summary["best"] = {k: self.best(k) for k in final if k.endswith(LOWER_IS_BETTER) or k == keys.GAP}
            if self.wandb is not None:
                for k, v in self.summary["best"].items():
                    if v is not None:
                        self.wandb.summary[f"best/{k}"] = v["value"]
        self.summary["wall_time_s"] = round(time.time() - self.start, 2)
        write_json_atomic(self.summary_path, self.summary)

    def finish(self, status: str, error: str | None = None) -> None:
        self.summary["status"] = status
        if error:
            self.summary["error"] = error
        self._write_summary()
        if self.wandb is not None:
            if status == "stopped":
                self.wandb.mark_preempting()  # W&B shows it as preempted, to be resumed
            self.wandb.finish(exit_code=0 if status == "finished" else 1)
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

    def log_figures(self, figures: dict, tokens_seen: int) -> None:
        pass

    def log_html(self, name: str, path: Path) -> None:
        pass

    def update(self, **info) -> None:
        pass

    def best(self, key: str) -> dict | None:
        return None

    def finish(self, status: str, error: str | None = None) -> None:
        pass
