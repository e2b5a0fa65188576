"""The fine-tuning table of gptfit.report (gptfit.show.finetune) on run folders as gptfit writes them: its
membership column is one score fixed before the scores are seen, never the best of several; a method's rate is
chosen on what it learned; the learn-forget frontier; the spectrum of a weight change (gptfit.metrics.spectrum)."""

from __future__ import annotations

from pathlib import Path

import torch

from gptfit.metrics.spectrum import change_ranks, rank_for_share
from gptfit.record import RunRecord
from gptfit.show.finetune import finetune_figures, finetune_table, frontier_note, matched_loss, pareto


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


def test_a_method_at_several_rates_names_the_rate_that_learned_most_and_shows_its_best_step(tmp_path):
    def at(name: str, lr: float, best: float) -> RunRecord:
        r = run(tmp_path, name, "lora", {"mia/loss/auc": 0.6})
        r.rows[1]["val/loss"] = best
        r.summary["config"]["train"]["lr"] = lr
        r.summary["canaries"] = [{"name": "once", "space_size": 10_000, "exposure": 5.0}]
        return r

    table = finetune_table([at("a", 1e-3, 4.5), at("b", 3e-3, 3.5)])
    rows = [line for line in table.splitlines()[2:]]
    assert "| 0.001 |" in rows[0] and "| 0.003 (chosen) |" in rows[1]
    assert "| 10 / 10 |" in rows[1]  # best step / last: the best was the last, so it was still learning
    assert "| once 5.0/13.3 |" in rows[1]  # exposure of its maximum, log2 10^4


def test_the_pareto_frontier_keeps_the_evaluations_no_other_beats_on_both_axes():
    lines = [
        {"method": "full", "lr": 1e-3, "points": [(10, 3.0, 5.0), (20, 2.0, 6.0), (30, 2.5, 7.0)]},
        {"method": "lora", "lr": 1e-3, "points": [(10, 3.5, 1.0), (20, 3.0, 2.0)]},
    ]
    front = pareto(lines)
    assert [(p["method"], p["step"]) for p in front] == [("full", 20), ("lora", 20), ("lora", 10)]
    note = frontier_note(front)
    assert "3 points: full 1, lora 2" in note and "full lr 0.001 step 20 (2.000, 6.000)" in note


def test_the_rank_explaining_90_percent_of_a_change_is_its_rank_when_the_change_is_low_rank():
    torch.manual_seed(0)
    base = {"w": torch.randn(64, 32), "bias": torch.randn(32)}
    low = torch.randn(64, 3) @ torch.randn(3, 32)  # a change of rank 3, like a LoRA of rank 3
    rows = change_ranks(base, {"w": base["w"] + low, "bias": base["bias"] + 1})
    assert rows == [{"matrix": "w", "full_rank": 32, "rank": rank_for_share(low)}]
    assert 1 <= rows[0]["rank"] <= 3
    # A change spread evenly over every direction needs 90% of them; no change needs none.
    assert rank_for_share(torch.eye(20)) == 18 and rank_for_share(torch.zeros(5, 5)) == 0


def test_membership_is_compared_where_every_run_reached_the_same_held_out_loss(tmp_path):
    def tabled(name: str, method: str, losses: list[float], aucs: list[float]) -> RunRecord:
        r = run(tmp_path, name, method, {})
        r.rows[:] = [
            {"step": 100 * i, "val/loss": loss, "mia/reference/auc": auc, "canary/once/exposure": 2.0 * i}
            for i, (loss, auc) in enumerate(zip(losses, aucs))
        ]
        return r

    full = tabled("a", "full", [5.0, 3.0, 2.0], [0.5, 0.8, 0.95])
    lora = tabled("b", "lora", [5.0, 4.0, 3.5], [0.5, 0.6, 0.7])
    text = matched_loss([full, lora])
    assert "at or below 3.500 nats" in text  # LoRA's best: the level both reached
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["full, lr 0.001, seed 1337"].endswith("| 100 | 3.000 | 0.800 | 2.0 |")  # its first step there
    assert rows["lora, lr 0.001, seed 1337"].endswith("| 200 | 3.500 | 0.700 | 4.0 |")


def test_the_figures_draw_every_run_and_its_trajectory(tmp_path):
    runs = [run(tmp_path, "a", "full", {}), run(tmp_path, "b", "lora", {})]
    paths = finetune_figures(runs, tmp_path)
    assert [p.name for p in paths] == ["learn_forget.png", "learn_forget_trajectories.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
