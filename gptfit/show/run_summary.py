"""What the console shows when a run ends: where its folder and page are, what it found, and where its W&B run
is. Read from summary.json, so the lines say what the files say."""

from __future__ import annotations

from pathlib import Path

from gptfit import keys
from gptfit.files import METRICS, PAGE, read_jsonl


def _figure(final: dict, key: str) -> str:
    value = final.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def best_membership(final: dict) -> tuple[str, float] | None:
    """The membership score with the highest AUC at the end: (its name, its AUC)."""
    scores = [
        (key.split("/")[1], value)
        for key, value in final.items()
        if key.startswith("mia/") and key.endswith("/auc") and isinstance(value, (int, float))
    ]
    return max(scores, key=lambda s: s[1]) if scores else None


def wandb_line(summary: dict) -> str:
    if "wandb_id" not in summary:
        return "W&B: off (logger=none or logger.mode=disabled)"
    if summary.get("wandb_url"):
        return f"W&B: {summary['wandb_url']}"
    folder = summary.get("wandb_dir", "wandb/")
    return f"W&B (offline): {folder}; upload it with `wandb sync {folder}`"


def closing_lines(summary: dict) -> list[str]:
    """The run's summary in a few lines (summary.json's figures: `final`, `best`, `wall_time_s`)."""
    run_dir = Path(summary["run_dir"]).resolve()
    final, best = summary.get("final", {}), summary.get("best", {}).get(keys.VAL_LOSS)
    lines = [f"run folder: {run_dir}"]
    if (run_dir / PAGE).exists():
        lines.append(f"explorer page: {(run_dir / PAGE).as_uri()}")
    if best is not None:
        lines.append(f"best val/loss {best['value']:.3f} at step {best['step']}; final gap {_figure(final, 'gap')}")
    lines.append(
        f"extraction: {_figure(final, 'mem/extraction_rate_train')} of training sequences, "
        f"{_figure(final, 'mem/extraction_rate_val')} of held-out ones"
    )
    membership = best_membership(final)
    if membership is not None:
        lines.append(f"membership inference: best score {membership[0]}, AUC {membership[1]:.3f}")
    lines.append(f"wall time: {summary.get('wall_time_s', 0):.0f} s ({len(read_jsonl(run_dir / METRICS))} evaluations)")
    lines.append(wandb_line(summary))
    return lines
