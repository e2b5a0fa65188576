"""The capacity study: its grid's dataset sizes are the multiples of each model's expected capacity they claim,
and gptfit.report finds each model's plateau and fits bits per parameter over the plateaus. The report's inputs
are hand-written run folders whose models hold exactly 2 bits a parameter: no training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from gptfit.data.corpus import load_corpus
from gptfit.metrics.bits import parameter_counts
from gptfit.model.loading import build_model
from gptfit.report import main as report_main
from gptfit.show.capacity import capacity_report, fit, law_text, membership_law, per_run, plateaus, sigmoid_law
from gptfit.show.sweep import read_sweep

ROOT = Path(__file__).resolve().parents[1]
RATIOS = (0.25, 0.5, 1, 2, 4)
BITS_PER_SEQUENCE = 63 * 4  # 64 tokens of 16 symbols: the first is never predicted


@pytest.mark.parametrize("size", sorted(p.stem for p in (ROOT / "conf" / "capacity").glob("*.yaml")))
def test_each_models_sizes_are_the_stated_multiples_of_its_capacity(compose_cfg, size):
    cfg = compose_cfg(["+experiment=capacity", f"capacity={size}"])
    layers, width = (int(v) for v in size.split("x"))
    assert (cfg.model.n_layer, cfg.model.n_embd) == (layers, width)
    corpus = load_corpus(cfg.data)
    params = parameter_counts(build_model(cfg.model, corpus.tokenizer))[0]
    assert corpus.uniform.length + 1 == cfg.model.block_size  # one window, one sequence and its end-of-text
    group = yaml.safe_load((ROOT / "conf" / "capacity" / f"{size}.yaml").read_text())
    sweep = group["hydra"]["sweeper"]["params"]["data.uniform.sequences"]
    expected = [round(r * 3.6 * params / BITS_PER_SEQUENCE) for r in RATIOS]
    assert [int(s) for s in str(sweep).split(",")] == expected


MODELS = {"1 x 32": (15_000, 12_000), "2 x 32": (27_000, 24_000), "2 x 64": (104_000, 98_000)}


def write_run(job: Path, model: str, sequences: int, seed: int, held_per_param: float = 2.0, law=None) -> None:
    """A finished data=uniform run whose model holds the whole set up to `held_per_param` bits a parameter."""
    params, non_embedding = MODELS[model]
    layers, width = (int(v) for v in model.split(" x "))
    bits = min(sequences * BITS_PER_SEQUENCE, held_per_param * params) * (1 + 0.001 * seed)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"data.uniform.sequences={sequences}"]))
    row = {"step": 1000, "epoch": 40.0, "capacity/bits_total": bits, "capacity/bits_per_param": bits / params}
    if law is not None:  # a membership AUC on Morris et al.'s law, at the model's capacity over the set's bits
        x = held_per_param * params / (sequences * BITS_PER_SEQUENCE)
        row["mia/loss/auc"] = float(sigmoid_law(np.array(x), *law))
    (job / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    config = {
        "name": "capacity",
        "seed": seed,
        "model": {"n_layer": layers, "n_embd": width},
        "data": {"source": "uniform", "uniform": {"vocab": 16, "length": 64, "sequences": sequences}},
    }
    summary = {
        "status": "finished",
        "config": config,
        "wall_time_s": 60.0,
        "final": row,
        "capacity/params": params,
        "capacity/params_non_embedding": non_embedding,
        "saturated_at_step": 1000,
    }
    (job / "summary.json").write_text(json.dumps(summary))


def sweep_of(root: Path) -> Path:
    jobs = [(m, math.ceil(r * 2.0 * MODELS[m][0] / BITS_PER_SEQUENCE)) for m in MODELS for r in RATIOS]
    for i, (model, sequences) in enumerate(jobs):
        write_run(root / "s" / str(i), model, sequences, seed=0)
    write_run(root / "s" / str(len(jobs)), "2 x 32", jobs[8][1], seed=1)  # a second seed at 2x
    return root / "s"


def test_the_plateau_is_each_models_most_bits_and_the_fit_recovers_bits_per_parameter(tmp_path):
    frame = per_run(read_sweep(sweep_of(tmp_path)))
    models = plateaus(frame)
    assert list(models["model"]) == list(MODELS)
    for _, m in models.iterrows():  # the set outgrows the model from ratio 1 on: the plateau is 2 x params
        assert m["plateau"] == pytest.approx(2.0 * m["params"], rel=0.002)
    result = fit(models)
    assert result.slope == pytest.approx(2.0, rel=0.002) and result.lo < result.slope < result.hi
    assert result.hi - result.lo < 0.01  # three models on one line: a narrow interval
    # Moving one model off the line widens the interval and keeps the truth inside it.
    models.loc[1, "plateau"] *= 1.2
    moved = fit(models)
    assert moved.hi - moved.lo > 10 * (result.hi - result.lo) and moved.lo < 2.0 < moved.hi


def test_the_report_has_the_capacity_section_and_figure(tmp_path):
    sweep = sweep_of(tmp_path)
    report_main([str(sweep)])
    text = (sweep / "report.md").read_text()
    assert "## Capacity" in text and "Morris et al. 2025: 3.6" in text
    assert "| 2 x 32 | 27,000 |" in text and "![capacity](capacity.png)" in text
    assert (sweep / "capacity.png").exists() and (sweep / "capacity.csv").exists()
    assert not (sweep / "report_copy_rate.png").exists()  # random sequences generate no samples to copy
    two_x = [line for line in text.splitlines() if line.startswith("| 2 x 32 | 27,000 | 429 |")]
    assert len(two_x) == 1 and "| 2 |" in two_x[0]  # its two seeds pooled into one row


def test_a_sweep_without_uniform_runs_has_no_capacity_table(tmp_path):
    write_run(tmp_path / "s" / "0", "1 x 32", 10, seed=0)
    summary = json.loads((tmp_path / "s" / "0" / "summary.json").read_text())
    summary["config"]["data"]["source"] = "python_docs"
    (tmp_path / "s" / "0" / "summary.json").write_text(json.dumps(summary))
    assert capacity_report(read_sweep(tmp_path / "s"), tmp_path) is None


def write_text_run(job: Path, train_tokens: int, dataset_bits: float, mem_bits: float) -> None:
    """A finished run on text scored against a reference: its dataset bits and last evaluation."""
    final = {
        "step": 600,
        "tokens_seen": 460_800,
        "val/loss": 5.0,
        "mem/mem_bits_train": mem_bits,
        "mem/extraction_rate_train": 0.5,
        "mem/mia_auc": 0.9,
    }
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"data.train_tokens={train_tokens}"]))
    (job / "metrics.jsonl").write_text(json.dumps(final) + "\n")
    config = {
        "seed": 0,
        "model": {"n_layer": 1, "n_embd": 32},
        "data": {"source": "python_docs"},
        "eval": {"prefix_tokens": 32, "suffix_tokens": 32},
    }
    summary = {
        "status": "finished",
        "config": config,
        "wall_time_s": 30.0,
        "final": final,
        "capacity/params": 10_000,
        "capacity/dataset_bits": dataset_bits,
        "data": {"train_tokens": train_tokens},
    }
    (job / "summary.json").write_text(json.dumps(summary))


def text_sweep(root: Path) -> Path:
    for i, (tokens, bits, mem) in enumerate([(1024, 5_000.0, 40.0), (4096, 20_000.0, 90.0), (16384, 80_000.0, 20.0)]):
        write_text_run(root / "t" / str(i), tokens, bits, mem)
    return root / "t"


def turn_rows(text: str) -> dict[str, list[str]]:
    """The turn table's rows by training tokens: their cells."""
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| 1 x 32 | 10,000 |")]
    return {cells[2]: cells for cells in rows}


@pytest.mark.slow
def test_the_turn_on_text_sets_dataset_bits_against_the_fitted_capacity(tmp_path):
    uniform, text_runs = sweep_of(tmp_path), text_sweep(tmp_path)
    report_main([str(uniform), str(text_runs)])
    out = tmp_path  # several sweeps report to their common folder
    report = (out / "report.md").read_text()
    assert "## The turn on text" in report and "![capacity_text](capacity_text.png)" in report
    assert "2.00 bits a parameter (fitted on data=uniform)" in report
    rows = turn_rows(report)
    # 20,000 dataset bits against 2.00 bits x 10,000 parameters: the turn itself.
    assert [rows[t][4] for t in ("1,024", "4,096", "16,384")] == ["0.25", "1.00", "4.00"]
    assert rows["4,096"][7] == "90.000"  # memorized bits a sequence, as the run logged them ...
    assert rows["4,096"][8] == f"{90 * 4096 // 64:.3f}"  # ... and over the set's 64 sequences of 64 tokens
    assert (out / "capacity_text.png").exists() and (out / "capacity_text.csv").exists()


def test_without_uniform_runs_the_turn_uses_the_papers_bits_per_parameter(tmp_path):
    text_runs = text_sweep(tmp_path)
    report_main([str(text_runs)])
    report = (text_runs / "report.md").read_text()
    assert "3.60 bits a parameter (Morris et al.)" in report and "## Capacity:" not in report
    assert turn_rows(report)["16,384"][4] == f"{80_000 / 36_000:.2f}"


def test_runs_on_one_membership_law_collapse_onto_it_and_a_model_off_it_stands_out(tmp_path):
    truth = (0.9, 3.0, -0.6)
    jobs = [(m, math.ceil(r * 2.0 * MODELS[m][0] / BITS_PER_SEQUENCE)) for m in MODELS for r in RATIOS]
    for i, (model, sequences) in enumerate(jobs):
        shifted = (0.9, 3.0, 0.4) if model == "2 x 64" else truth  # the largest model on another curve
        write_run(tmp_path / "s" / str(i), model, sequences, seed=0, law=shifted)
    frame = per_run(read_sweep(tmp_path / "s"))
    models = plateaus(frame)
    on_law = membership_law(frame[frame["model"] != "2 x 64"], models[models["model"] != "2 x 64"])
    (c1, c2, c3), rms = on_law["pooled"]
    assert rms < 1e-3 and (c1, c2, c3) == pytest.approx(truth, rel=0.05)
    law = membership_law(frame, models)
    text = law_text(law)
    assert f"fitted to {len(jobs)} runs of 3 models" in text
    cells = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines()[4:]}
    # The pooled curve misses every model, the shifted one most, while each model's own fit is exact: the sizes
    # do not collapse.
    assert law["pooled"][1] > 0.03 and float(cells["2 x 64"][2]) > max(float(cells[m][2]) for m in ("1 x 32", "2 x 32"))
    assert all(float(cells[m][3].rstrip(" |")) < 1e-3 for m in MODELS)
