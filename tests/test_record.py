"""The one reader of a run folder (gptfit.record): a real run read into its typed parts, and folders written
by earlier versions (keys lost and gained since) or never started."""

from __future__ import annotations

import json

import yaml

from gptfit.config import Config, EvalConfig
from gptfit.files import METRICS, read_jsonl
from gptfit.record import RunRecord


def test_a_finished_run_reads_as_its_typed_config_rows_summary_table_and_models(tiny_corpus_run):
    run = RunRecord.read(tiny_corpus_run)
    assert isinstance(run.config, Config) and run.config.name == "tiny_corpus"
    assert run.config.data.train_tokens == run.train_tokens == run.summary["config"]["data"]["train_tokens"]
    assert (
        run.finished and run.rows == read_jsonl(tiny_corpus_run / METRICS) and run.final["step"] == run.rows[-1]["step"]
    )
    last = run.last_table(columns=["split", "loss"])
    assert set(last["step"].to_pylist()) == {run.table(columns=["step"])["step"].to_pylist()[-1]}
    assert set(last["split"].to_pylist()) == {"train", "val"}
    assert (run.model_dir() / "config.json").exists() and run.samples


def test_an_old_folder_drops_the_keys_it_lost_and_takes_defaults_for_the_keys_it_lacks(tmp_path):
    # A config.yaml as an earlier version wrote it: a key since removed, no eval section at all, and parts that
    # were null sections (off) before every section always existed.
    off = {"duplicates": None, "forget": None, "subset": None}
    saved = {"name": "old", "seed": 3, "train": {"lr": 0.01, "a_removed_knob": 1}, "data": {"train_tokens": 512, **off}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished", "final": {"step": 10}}))
    run = RunRecord.read(tmp_path)
    assert run.config.train.lr == 0.01 and not hasattr(run.config.train, "a_removed_knob")
    assert run.config.eval == EvalConfig() and run.train_tokens == 512 and run.finished
    assert not (run.config.data.duplicates.on or run.config.data.forget.on or run.config.data.subset.on)


def test_a_job_that_never_started_reads_as_not_started_with_its_swept_size(tmp_path):
    job = tmp_path / "3"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["+experiment=corpus_ladder", "data.train_tokens=1024"])
    )
    run = RunRecord.read(job)
    assert run.status == "not started" and not run.has_config and run.swept == {"data.train_tokens": 1024}
    assert run.train_tokens == 1024 and run.group is None and run.table() is None and run.rows == []


def test_a_running_run_killed_reads_as_unfinished(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "running"}))
    assert RunRecord.read(tmp_path).status == "unfinished"
