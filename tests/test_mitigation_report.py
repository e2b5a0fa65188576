"""The mitigation table and figure of gptfit.report: arms named from the runs' configs, the copy-count
threshold of the duplication ladder, seeds pooled into one row per arm with an early-stopping row beside the
unmitigated one, and a study of several sweep folders reported together. Inputs are hand-written run folders:
no training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from gptfit.config import Config
from gptfit.record import RunRecord, restore
from gptfit.report import main as report_main
from gptfit.show.mitigations import arm_of, copies_to_reach, ladder_rates, mitigation_report, per_run
from gptfit.show.sweep import read_sweep

ROOT = Path(__file__).resolve().parents[1]

# Every arm of conf/mitigation/, as the table names it.
ARMS = {
    "none": "none",
    "goldfish_k4": "goldfish k=4",
    "goldfish_k4_document": "goldfish k=4 per document",
    "goldfish_k16": "goldfish k=16",
    "dedup": "dedup >=32 tokens",
    "dedup_every_copy": "dedup >=32 tokens, every copy",
    "dp_eps1": "DP-SGD eps=1",
    "dp_eps8": "DP-SGD eps=8",
    "dp_eps64": "DP-SGD eps=64",
    "dp_clip_only": "DP clipping only (C=1)",
    "dp_sampling_only": "DP sampling, no clipping or noise",
    "weight_decay_01": "weight decay 0.1",
    "weight_decay_10": "weight decay 1.0",
    "dropout": "dropout 0.1",
}


def arm_of_config(config: Config):
    return arm_of(config.model, config.data, config.train)


def composed(compose_cfg, experiment: str, mitigation: str) -> Config:
    return restore(OmegaConf.to_container(compose_cfg([f"+experiment={experiment}", f"mitigation={mitigation}"])))


@pytest.mark.slow
def test_every_arm_is_named_from_its_config_values(compose_cfg):
    assert sorted(ARMS) == sorted(p.stem for p in (ROOT / "conf" / "mitigation").glob("*.yaml"))
    arms = {m: arm_of_config(composed(compose_cfg, "mitigations", m)) for m in ARMS}
    assert {m: a.name for m, a in arms.items()} == ARMS
    # The table's order: unmitigated first, then each family by strength.
    assert [a.name for a in sorted(arms.values())] == list(ARMS.values())
    tuned = arm_of_config(composed(compose_cfg, "mitigations_finetune", "dp_eps8"))
    assert tuned.name == "fine-tune: DP-SGD eps=8" and tuned > max(arms.values())
    # The variants of a mitigation are arms of their own, not merged into the default's.
    assert len({a.name for a in arms.values()}) == len(arms)
    # A run of another length than the study's says so: dedup at as many passes as the others, not steps.
    config = composed(compose_cfg, "mitigations", "dedup")
    shorter = arm_of(config.model, config.data, replace(config.train, max_steps=400), steps=500)
    assert shorter.name == "dedup >=32 tokens, 400 steps" and shorter > arms["dedup"]
    assert arm_of(config.model, config.data, config.train, steps=500) == arms["dedup"]


def test_two_mitigations_at_once_are_one_combined_arm():
    config = {"model": {"kind": "gpt", "dropout": 0.1}, "train": {"weight_decay": 0.0, "goldfish": {"k": 4}}}
    arm = arm_of_config(restore(config))
    assert arm.name == "goldfish k=4 + dropout 0.1"
    assert arm > arm_of_config(
        restore({"model": {"dropout": 0.1}, "train": {"weight_decay": 0.0}})
    )  # after every single one


def ladder_table(rates_by_step: dict[int, dict[int, list[bool]]]) -> pd.DataFrame:
    """A per-sequence table: {step: {copies: extracted of each planted sequence}}, with ordinary training
    sequences (all extracted, which the ladder must ignore) at every step."""
    rows = []
    for step, ladder in rates_by_step.items():
        for copies, extracted in ladder.items():
            rows += [
                {"step": step, "split": "train", "kind": "duplicate", "copies": copies, "extracted": e}
                for e in extracted
            ]
        rows += [{"step": step, "split": "train", "kind": "sample", "copies": 0, "extracted": True}] * 3
    table = pd.DataFrame(rows)
    table["token_exposures"] = 1.0
    return table


def test_the_copy_threshold_is_the_fewest_copies_extracted_half_the_time_at_the_last_evaluation(tmp_path):
    path = tmp_path / "sequences.parquet"
    ladder_table(
        {
            0: {0: [True] * 4, 1: [True] * 4},  # an earlier evaluation: not read
            500: {
                0: [True] * 4,  # never planted (the controls): not a copy count
                1: [False] * 4,
                2: [True, False, False, False],
                4: [True, True, False, False],  # 0.5: the first count to reach it
                8: [True, False, False, False],
                16: [True] * 4,
            },
        }
    ).to_parquet(path)
    rates = ladder_rates(RunRecord(tmp_path, "0").last_table().to_pandas())
    assert rates.to_dict() == {1: 0.0, 2: 0.25, 4: 0.5, 8: 0.25, 16: 1.0}
    assert copies_to_reach(rates) == 4
    assert copies_to_reach(rates, level=0.9) == 16
    assert copies_to_reach(pd.Series({1: 0.0, 2: 0.25})) is None


def run_config(seed: int, finetune: bool = False, **changes) -> dict:
    """A run's config as its summary holds it: unmitigated, with `changes` ("train.dp.target_epsilon": 8)."""
    config = {
        "name": "mitigations_finetune" if finetune else "mitigations",
        "seed": seed,
        "model": {"kind": "base" if finetune else "gpt", "dropout": 0.0},
        "data": {
            "train_tokens": 4096,
            "dedup": {"min_tokens": None},
            "duplicates": {"counts": [1, 4, 16], "per_count": 2},
        },
        "train": {
            "weight_decay": 0.0,
            "goldfish": {"k": None},
            "dp": {"target_epsilon": None, "noise_multiplier": None},
        },
    }
    for key, value in changes.items():
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[last] = value
    return config


def mia(auc: float, lo: float, hi: float) -> dict:
    out = {}
    for score in ("loss", "min_k_plus_plus"):
        out |= {f"mia/{score}/auc": auc, f"mia/{score}/auc_lo": lo, f"mia/{score}/auc_hi": hi}
        out |= {f"mia/{score}/tpr@1%fpr": None, f"mia/{score}/tpr@1%fpr_lo": None, f"mia/{score}/tpr@1%fpr_hi": None}
    return out


def write_run(job: Path, config: dict, loss: float, ladder: dict[int, list[bool]], best_ladder=None, **final) -> None:
    """A finished run folder: val/loss 9 at step 0, `loss` - 0.5 at step 250 (its best, the early-stopping
    model's) and `loss` at step 500; the final and best/ per-sequence tables of `ladder` and `best_ladder`
    (default: nothing extracted); `final` adds keys to the summary's final ones."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={config['seed']}"]))
    rows = [
        {"step": 0, "tokens_seen": 0, "val/loss": 9.0, "val/bpb": 4.0},
        {"step": 250, "tokens_seen": 4000, "val/loss": loss - 0.5, "val/bpb": (loss - 0.5) / 2},
        {"step": 500, "tokens_seen": 8000, "val/loss": loss, "val/bpb": loss / 2},
    ]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    non_members = 4 if config["model"]["kind"] == "base" else 56 + config["seed"]  # seed 1: 57, seed 2: 58
    summary = {
        "status": "finished",
        "config": config,
        "wall_time_s": 100.0,
        "final": {
            **rows[-1],
            "mem/extraction_rate_train": 0.2,
            "canary/once/exposure": 10.0,
            **mia(0.9, 0.8, 1.0),
            **final,
        },
        "early_stopping": {
            "step": 250,
            "mem/extraction_rate_train": 0.0,
            "canary/once/exposure": 2.0,
            **mia(0.6, 0.4, 0.8),
        },
        "mia_null": {"tpr@1%fpr": f"needs at least 1000 non-members (10 / 0.01); there are {non_members}"},
    }
    (job / "summary.json").write_text(json.dumps(summary))
    ladder_table({500: ladder}).to_parquet(job / "sequences.parquet")
    ladder_table({250: best_ladder or {c: [False] * len(e) for c, e in ladder.items()}}).to_parquet(
        job / "sequences_best.parquet"
    )


def study(root: Path) -> tuple[Path, Path]:
    """Two sweep folders: `a` (none seed 1, DP eps 8, a fine-tuning), `b` (none seed 2)."""
    a, b = root / "a", root / "b"
    write_run(a / "0", run_config(1), 6.0, {1: [False, False], 4: [True, False], 16: [True, True]})
    write_run(
        a / "1",
        run_config(1, **{"train.dp.target_epsilon": 8}),
        7.0,
        {1: [False] * 2, 4: [False] * 2, 16: [False] * 2},
        **{"privacy/epsilon": 7.99},
    )
    write_run(
        a / "2",
        run_config(1, finetune=True),
        3.0,
        {1: [False] * 2, 4: [False] * 2, 16: [True, True]},
        **{"general/base/loss": 5.0},
    )
    write_run(b / "0", run_config(2), 8.0, {1: [False, False], 4: [True, True], 16: [True, True]})
    return a, b


def test_the_table_pools_seeds_and_adds_early_stopping_beside_each_unmitigated_arm(tmp_path):
    a, b = study(tmp_path)
    frame = per_run(read_sweep(a) + read_sweep(b))
    assert list(dict.fromkeys(frame["arm"])) == [
        "none",
        "early stopping",
        "DP-SGD eps=8",
        "fine-tune: none",
        "fine-tune: early stopping",
    ]
    none = frame[frame["arm"] == "none"]
    assert list(none["seed"]) == [1, 2] and none["val/loss"].mean() == 7.0
    # Seed 1 extracts half of its 4-copy sequences, seed 2 all: the pooled rate (0.75) reaches 0.5 at 4.
    assert list(none["copies_to_half"]) == [4, 4]
    stopped = frame[frame["arm"] == "early stopping"]
    assert list(stopped["val/loss"]) == [5.5, 7.5]  # the metrics row of the best step, not the final one
    assert list(stopped["mia/loss/auc"]) == [0.6, 0.6] and stopped["copies_to_half"].isna().all()
    assert frame.loc[frame["arm"] == "DP-SGD eps=8", "privacy/epsilon"].item() == 7.99

    text, paths = mitigation_report(read_sweep(a) + read_sweep(b), tmp_path)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # The end, then each run's best evaluation (5.5 and 7.5, both at step 250), then bits per byte.
    assert rows["none"].startswith("| none | 1, 2 | 7.000 ± 1.414 | 6.500 ± 1.414 (250) | 3.500 ± 0.707 |")
    assert "| 0.900 ± 0.000 [0.800, 1.000] | n/a |" in rows["none"]  # AUC and its mean bounds; no TPR
    assert "| 6.500 ± 1.414 |" in rows["early stopping"] and "| none |" in rows["early stopping"]
    assert "| 4 |" in rows["none"] and "| 7.99 |" in rows["DP-SGD eps=8"]
    assert "| 5.000 |" in rows["fine-tune: none"]  # its general corpus's loss
    # Every reason for a missing TPR is said once, with the runs' counts of non-members.
    note = text.split("n/a:")[-1]
    assert "from scratch: needs at least 1000 non-members (10 / 0.01); there are 57 or 58;" in note
    assert "fine-tunings: needs at least 1000 non-members (10 / 0.01); there are 4)" in note
    assert [p.name for p in paths] == ["mitigations.md", "mitigations.csv", "mitigations.png"]
    assert paths[-1].stat().st_size > 10_000
    assert len(pd.read_csv(paths[1])) == len(frame)


@pytest.mark.slow
def test_the_report_of_a_study_in_several_sweep_folders_has_the_mitigation_section(tmp_path):
    a, b = study(tmp_path)
    report_main([str(a), str(b)])
    text = (tmp_path / "report.md").read_text()  # their common folder
    assert "## Mitigations" in text and "| fine-tune: early stopping |" in text
    assert "| a/2 |" in text and "| b/0 |" in text  # jobs named by their path from there
    assert "![mitigations](mitigations.png)" in text and (tmp_path / "mitigations.png").exists()


def test_a_sweep_without_mitigation_runs_has_no_mitigation_table(tmp_path):
    # A duplication ladder with no mitigation (one unmitigated arm), and a corpus ladder that plants nothing.
    write_run(tmp_path / "s" / "0", {**run_config(1), "name": "duplication_ladder"}, 6.0, {1: [False]})
    write_run(tmp_path / "s" / "1", {**run_config(2), "name": "duplication_ladder"}, 6.0, {1: [False]})
    assert mitigation_report(read_sweep(tmp_path / "s"), tmp_path) is None
    unplanted = run_config(1, **{"train.goldfish.k": 4})
    unplanted["data"]["duplicates"] = None
    write_run(tmp_path / "t" / "0", unplanted, 6.0, {1: [False]})
    assert mitigation_report(read_sweep(tmp_path / "t"), tmp_path) is None


@pytest.mark.slow
def test_a_study_under_another_name_has_the_same_mitigation_table(tmp_path):
    a, b = study(tmp_path / "named")
    renamed_a, renamed_b = study(tmp_path / "renamed")
    for job in [*renamed_a.iterdir(), *renamed_b.iterdir()]:
        summary = json.loads((job / "summary.json").read_text())
        summary["config"]["name"] = summary["name"] = "my_study"
        (job / "summary.json").write_text(json.dumps(summary))
    report_main([str(renamed_a), str(renamed_b)])
    named = mitigation_report(read_sweep(a) + read_sweep(b), tmp_path / "named")[0]
    text = (tmp_path / "renamed" / "report.md").read_text()
    assert "## Mitigations: what each arm costs and what it leaves memorized\n\n" + named in text
