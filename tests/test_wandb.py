"""What reaches Weights & Biases, read back from the `.wandb` file of real offline runs (tests/wandb_log.py):
the history row for row against metrics.jsonl, the metric definitions, the config, the summary, the tags and
notes, and the artifacts; a multirun grouped by condition."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from gptfit import keys, workspace
from gptfit.cli import MAX_GROUP, _is_seed_or_choice, condition_group, experiment_notes
from gptfit.files import METRICS, SUMMARY, read_jsonl
from gptfit.run.wandb_run import hidden
from tests.conftest import ROOT, TINY, run_cli
from tests.wandb_log import find_run

MEDIA = ("loss", "memorization", "mia/roc", "explore", "sequences", "samples")


def test_the_history_is_metrics_jsonl_row_for_row_with_the_media_in_the_rows(tiny_corpus_run):
    wb, rows = find_run(tiny_corpus_run / "wandb"), read_jsonl(tiny_corpus_run / METRICS)
    assert len(wb.history) == len(rows) > 2  # one log call per evaluation: no media-only rows
    for logged, row in zip(wb.history, rows):
        kept = {k: v for k, v in row.items() if v is not None}
        assert {k: logged[k] for k in kept} == kept
        scalars = {k for k, v in logged.items() if not isinstance(v, dict) and not k.startswith("_")}
        assert scalars == kept.keys()  # nothing else, nothing less
    last = wb.history[-1]
    assert all(isinstance(last.get(m), dict) and "_type" in last[m] for m in MEDIA), sorted(last)
    assert not any(isinstance(v, dict) for v in wb.history[1].values())  # step 5: no samples nor table


def test_fine_grained_keys_are_hidden_and_everything_is_charted_against_tokens_seen(tiny_corpus_run):
    wb, rows = find_run(tiny_corpus_run / "wandb"), read_jsonl(tiny_corpus_run / METRICS)
    assert wb.metrics["*"].step_metric == keys.TOKENS_SEEN
    logged = {k for r in rows for k, v in r.items() if v is not None}  # null: never sent
    hidden_keys = {k for k in logged if hidden(k)}
    assert {keys.STEP, keys.EPOCH, "mia/loss/auc_lo", "gen/greedy/longest_copy_chars"} <= hidden_keys
    assert all(wb.metrics[k].options.hidden for k in hidden_keys)
    shown = {keys.VAL_LOSS, keys.GAP, "mia/loss/auc", "gen/greedy/copy_rate", "gen/greedy/novel_8gram"}
    assert shown <= logged and not shown & hidden_keys and not any(k in wb.metrics for k in shown)


def test_the_summary_takes_best_at_the_lowest_validation_loss_and_the_config_its_facts(tiny_corpus_run):
    wb, rows = find_run(tiny_corpus_run / "wandb"), read_jsonl(tiny_corpus_run / METRICS)
    summary = json.loads((tiny_corpus_run / SUMMARY).read_text())
    best = min(rows, key=lambda r: r[keys.VAL_LOSS])
    assert wb.summary["best/step"] == best["step"] and wb.summary[f"best/{keys.GAP}"] == best[keys.GAP]
    assert wb.summary[f"best/{keys.GAP}"] != min(r[keys.GAP] for r in rows)  # not the untrained model's gap
    assert wb.summary["status"] == "finished" and wb.summary["eval_time_s"] == summary["eval_time_s"]
    assert wb.config["name"] == "tiny_corpus" and wb.config["data"] == summary["config"]["data"]
    derived = wb.config["derived"]
    assert derived["n_params"] == summary["n_params"] and derived["corpus_hash"] == summary["corpus_hash"]
    assert derived["data"] == summary["data"] and wb.exit_code == 0


def test_the_run_is_tagged_and_noted_from_its_experiment(tiny_corpus_run):
    wb = find_run(tiny_corpus_run / "wandb")
    assert {"experiment:tiny_corpus", "data:python_docs", "model:tiny"} <= set(wb.tags)
    assert wb.run.notes == experiment_notes(ROOT / "conf" / "experiment" / "tiny_corpus.yaml")
    assert wb.run.notes.startswith("A tiny GPT on a few thousand tokens") and "@package" not in wb.run.notes
    assert wb.run.run_group == wb.run.display_name  # a single run is its own group


def test_the_corpus_and_the_tokenizer_are_artifacts_named_by_their_hashes(tiny_corpus_run):
    wb = find_run(tiny_corpus_run / "wandb")
    summary = json.loads((tiny_corpus_run / SUMMARY).read_text())
    by_type = {a.type: a for a in wb.artifacts if a.type in ("dataset", "tokenizer", "model", "table")}
    assert set(by_type) == {"dataset", "tokenizer"}  # models and the table only under logger.log_model
    corpus, tokenizer = by_type["dataset"], by_type["tokenizer"]
    assert corpus.name.startswith("corpus-") and tokenizer.name == f"tokenizer-{summary['tokenizer_hash'][:16]}"
    meta = json.loads(corpus.metadata)
    assert meta["corpus_hash"] == summary["corpus_hash"] and meta["train_tokens"] == summary["data"]["train_tokens"]
    assert {e.path for e in corpus.manifest.contents} == {"train.npy", "val.npy"}
    assert "tokenizer.json" in {e.path for e in tokenizer.manifest.contents}


def test_seeds_are_what_a_group_averages():
    assert _is_seed_or_choice("seed=3") and _is_seed_or_choice("data.subset.seed=2")
    assert _is_seed_or_choice("+experiment=corpus_ladder")
    assert not _is_seed_or_choice("data.train_tokens=512") and not _is_seed_or_choice("train.finetune=lora")
    one, other = (condition_group("s", ["+experiment=x", "data.train_tokens=512", f"seed={s}"]) for s in (1, 2))
    assert one == other == "s/data.train_tokens=512"
    long = [f"model.n_layer={n}" for n in range(40)]
    assert (
        len(condition_group("s", long))
        == MAX_GROUP
        != len(set(condition_group("s", long[:-1] + [x]) for x in "ab")) - 1
    )


@pytest.mark.slow
def test_a_multirun_is_grouped_by_condition_and_tagged_with_its_sweep(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = [*TINY, f"data.cache_dir={cache_dir}", "train.max_steps=2", "eval.explore=false", "logger=wandb"]
    sizes = "data.train_tokens=512,1024"
    result = run_cli("-m", *args, sizes, "seed=3", f"hydra.sweep.dir={sweep}", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-2000:]
    runs = [find_run(sweep / job / "wandb") for job in ("0", "1")]
    groups = [r.run.run_group for r in runs]
    assert len(set(groups)) == 2 and all(g.startswith("default-sweep/") and "seed" not in g for g in groups)
    assert all(f"sweep:{sweep.name}" in r.tags and r.config["logger"]["sweep"] == sweep.name for r in runs)
    assert all(f"data.train_tokens={n}" in r.run.display_name for r, n in zip(runs, (512, 1024)))


def test_the_workspace_charts_what_a_run_logs(tiny_corpus_run, tmp_path, capsys):
    shutil.copytree(tiny_corpus_run, tmp_path / "run", ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    workspace.main([str(tmp_path / "run"), "--dry-run"])
    described = json.loads((tmp_path / "run" / workspace.SPEC).read_text())
    assert [s["name"] for s in described["sections"]] == [
        "Overview",
        "Memorization",
        "Membership",
        "Copying by decoding setting",
        "Samples",
    ]  # a single run: no sweep section
    assert described["project"] == "gptfit" and "5 sections" in capsys.readouterr().out
    overview = described["sections"][0]["panels"][0]
    assert overview["y"] == [keys.TRAIN_LOSS, keys.VAL_LOSS] and overview["x"] == keys.TOKENS_SEEN  # overlaid
    logged = {k for r in read_jsonl(tiny_corpus_run / METRICS) for k in r}
    last = find_run(tiny_corpus_run / "wandb").history[-1]
    empty = set()  # the panels this run has nothing for
    for section in described["sections"]:
        for panel in section["panels"]:
            if panel["kind"] == "media":
                assert all(k in last for k in panel["y"]), panel
            elif not (
                any(re.search(panel["regex"], k) for k in logged) if panel["regex"] else set(panel["y"]) <= logged
            ):
                empty.add(panel["title"])
    # tiny_corpus plants no canary and scores against no reference model: only those two panels are empty
    assert empty == {"exposure of planted secrets (bits)", "memorized bits a training sequence"}
    copying = [p for p in described["sections"][3]["panels"] if p["title"].startswith("copy rate")][0]
    assert len([k for k in logged if re.search(copying["regex"], k)]) == 7  # one chart, a line per setting
    # The same workspace in wandb-workspaces' terms, as `save()` would send it (saving needs a server).
    built = workspace.to_workspace(described, entity="someone")
    assert [s.name for s in built.sections] == [s["name"] for s in described["sections"]]
    assert built.sections[0].panels[0].y == [keys.TRAIN_LOSS, keys.VAL_LOSS]


def test_a_sweep_workspace_plots_its_figures_against_the_swept_value(tmp_path):
    for job, (size, seed) in enumerate([(512, 1), (512, 2), (1024, 1)]):
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        overrides = [f"data.train_tokens={size}", f"seed={seed}"]
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        config = {"seed": seed, "data": {"train_tokens": size}, "logger": {"project": "p", "entity": "e"}}
        (folder / SUMMARY).write_text(json.dumps({"status": "finished", "config": config}))
    described = workspace.describe(tmp_path, None)
    assert (described["project"], described["entity"]) == ("p", "e")
    sweep = described["sections"][-1]
    assert sweep["name"] == "Sweep" and {p["x"] for p in sweep["panels"]} == {"data.train_tokens"}  # not the seed
    assert workspace.to_workspace(described).sections[-1].panels[0].x.name == "data.train_tokens"


def test_the_workspace_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    result = run_cli(str(tmp_path / "nope"), "--dry-run", module="gptfit.workspace")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "no such run" in result.stderr
