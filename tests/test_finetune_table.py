"""The fine-tuning table of gptfit.report (gptfit.show.finetune) on run folders as gptfit writes them: its
membership column is one score fixed before the scores are seen, never the best of several."""

from __future__ import annotations

from pathlib import Path

from gptfit.record import RunRecord
from gptfit.show.finetune import finetune_table


def run(tmp_path: Path, name: str, method: str, final_mia: dict) -> RunRecord:
    rows = [
        {"step": 0, "val/loss": 5.0, "general/base/loss": 3.0, "forgetting/base": 0.0, "forgetting_acc/base": 0.0},
        {"step": 10, "val/loss": 4.0, "general/base/loss": 4.0, "forgetting/base": 1.0, "forgetting_acc/base": 0.1},
    ]
    final = {**rows[-1], "mem/extraction_rate_train": 0.5, **final_mia}
    config = {"train": {"finetune": method}, "data": {"train_tokens": 1024}}
    summary = {"status": "finished", "final": final, "config": config, "trainable_params": 100, "wall_time_s": 9.0}
    return RunRecord(tmp_path / name, name, summary, rows)


def test_the_membership_column_is_the_reference_score_or_the_loss_never_the_best(tmp_path):
    with_base = {"mia/reference/auc": 0.7, "mia/loss/auc": 0.9, "mia/zlib/auc": 0.95}
    without = {"mia/loss/auc": 0.6, "mia/min_k/auc": 0.99}
    table = finetune_table([run(tmp_path, "a", "full", with_base), run(tmp_path, "b", "lora", without)])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert "| reference | 0.700 |" in rows["full"] and "0.95" not in rows["full"]
    assert "| loss | 0.600 |" in rows["lora"] and "0.99" not in rows["lora"]
    assert "| 0.100 |" in rows["full"]  # the general top-1 accuracy lost by the end
