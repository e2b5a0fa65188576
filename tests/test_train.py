"""Training runs end to end: what a run leaves behind, resuming, and pretrained Hugging Face models."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from gptfit.data.sources import python_docs
from gptfit.data.tokenizer import train_bpe
from gptfit.errors import UserError
from gptfit.files import read_jsonl
from gptfit.run.checkpoints import COMPLETE, find_checkpoint
from gptfit.run.trainer import native_bf16
from gptfit.run.training import train
from tests.conftest import TINY

METRIC_KEYS = {
    "step",
    "tokens_seen",
    "epoch",
    "train/loss",
    "val/loss",
    "train/ppl",
    "val/ppl",
    "train/bpb",
    "val/bpb",
    "gap",
}


def test_a_run_leaves_its_metrics_summary_models_and_figure(tiny_run):
    run_dir, summary = tiny_run
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 20]
    assert all(METRIC_KEYS <= r.keys() for r in rows)
    assert all("train/running_loss" in r and "train/lr" in r for r in rows[1:])
    assert rows[-1]["tokens_seen"] == 20 * 8 * 48
    assert rows[-1]["train/loss"] < rows[0]["train/loss"] - 0.5  # it learned something
    assert all(abs(r["gap"] - (r["val/loss"] - r["train/loss"])) < 1e-9 for r in rows)

    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == "finished" and summary["status"] == "finished"
    assert on_disk["final"]["step"] == 20
    assert on_disk["best"]["val/loss"]["value"] == min(r["val/loss"] for r in rows)
    assert {"corpus_hash", "tokenizer_hash", "versions", "git_commit", "config", "wall_time_s"} <= on_disk.keys()
    assert 0.0 <= on_disk["data/val_overlap_8gram"] < 0.2
    for sub in ("final", "best", "tokenizer"):
        assert (run_dir / sub / "tokenizer.json").exists()
    assert (run_dir / "final" / "model.safetensors").exists()
    assert (run_dir / "loss.png").stat().st_size > 10_000
    assert (run_dir / "config.yaml").exists()


def test_checkpoints_are_complete_and_limited(tiny_run):
    run_dir, _ = tiny_run
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in ckpts] == ["checkpoint-10", "checkpoint-20"]
    assert all((c / COMPLETE).exists() for c in ckpts)
    assert find_checkpoint(run_dir).name == "checkpoint-20"


def test_a_half_written_checkpoint_is_skipped(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    (run_dir / "checkpoints" / "checkpoint-20" / COMPLETE).unlink()
    with pytest.warns(UserWarning, match="checkpoint-20"):
        assert find_checkpoint(run_dir).name == "checkpoint-10"


@pytest.mark.slow
def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(tiny_run, make_config, tmp_path):
    full_dir, _ = tiny_run
    full = read_jsonl(full_dir / "metrics.jsonl")
    # The same run, as if killed after its checkpoint at step 10.
    cut = tmp_path / "cut"
    shutil.copytree(full_dir, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-20")
    shutil.rmtree(cut / "final")
    cfg = make_config(
        [*TINY, "train.save_every=10", "train.save_total_limit=3", f"train.resume={cut}"], tmp_path / "unused"
    )
    summary = train(cfg)
    resumed = read_jsonl(cut / "metrics.jsonl")
    assert summary["resumed_from_step"] == 10
    assert [r["step"] for r in resumed] == [0, 5, 10, 15, 20]  # no duplicated rows
    for a, b in zip(full, resumed):
        for key in ("train/loss", "val/loss", "train/running_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


@pytest.mark.slow
def test_bf16_training_follows_fp32_and_evaluates_in_fp32(tiny_run, make_config, tmp_path):
    cfg = make_config(
        [*TINY, "train.save_every=10", "train.save_total_limit=3", "train.precision=bf16"], tmp_path / "bf16"
    )
    if not native_bf16("cpu"):  # bf16 is refused where it would be emulated
        with pytest.raises(UserError, match="no native bf16"):
            train(cfg)
        return
    summary = train(cfg)
    assert summary["precision"] == "bf16"
    fp32 = read_jsonl(tiny_run[0] / "metrics.jsonl")
    bf16 = read_jsonl(tmp_path / "bf16" / "metrics.jsonl")
    # Step 0 is measured before any update, and evaluation runs in fp32: the same numbers.
    assert bf16[0]["val/loss"] == fp32[0]["val/loss"]
    # The updates were computed in bf16: close to the fp32 run, not equal to it.
    assert bf16[1]["train/loss"] != fp32[1]["train/loss"]
    for a, b in zip(fp32, bf16):
        assert b["train/loss"] == pytest.approx(a["train/loss"], abs=0.15), a["step"]
    assert bf16[-1]["train/loss"] < bf16[0]["train/loss"] - 1.0


def test_resume_refuses_a_run_with_other_model_settings(tiny_run, make_config, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    cfg = make_config([*TINY, "model.n_embd=64", f"train.resume={run_dir}"], tmp_path / "unused")
    with pytest.raises(UserError, match="model config differs"):
        train(cfg)


@pytest.mark.slow
def test_fine_tuning_from_an_earlier_run(tiny_run, make_config, tmp_path):
    cfg = make_config([*TINY, f"model.init_from={tiny_run[0]}", "train.max_steps=5"], tmp_path / "ft")
    summary = train(cfg)
    rows = read_jsonl(tmp_path / "ft" / "metrics.jsonl")
    # It starts where the earlier run ended, not from scratch.
    assert rows[0]["val/loss"] == pytest.approx(tiny_run[1]["final"]["val/loss"], rel=0.05)
    assert summary["status"] == "finished"


@pytest.fixture(scope="module")
def local_hf_models(tmp_path_factory, cache_dir):
    """A tiny GPT-2 and a tiny GPT-NeoX (Pythia's family), saved locally with a tokenizer."""
    tokenizer = train_bpe(python_docs()[:20], 400, cache_dir)
    root = tmp_path_factory.mktemp("hf")
    ids = dict(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    models = {
        "gpt2": GPT2LMHeadModel(
            GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, **ids)
        ),
        "neox": GPTNeoXForCausalLM(
            GPTNeoXConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                **ids,
            )
        ),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_fine_tuning_a_local_hugging_face_model(local_hf_models, make_config, tmp_path, family):
    path = local_hf_models / family
    cfg = make_config([*TINY, "model=hf", f"model.name_or_path={path}", "train.max_steps=10"], tmp_path / "run")
    summary = train(cfg)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert summary["status"] == "finished" and rows[-1]["train/loss"] < rows[0]["train/loss"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    assert type(reloaded).__name__ == type(AutoModelForCausalLM.from_pretrained(path)).__name__


def test_a_window_longer_than_the_model_context_is_refused(local_hf_models, make_config, tmp_path):
    cfg = make_config(
        [*TINY, "model=hf", f"model.name_or_path={local_hf_models / 'gpt2'}", "model.block_size=128"], tmp_path / "run"
    )
    with pytest.raises(UserError, match="model.block_size=128: longer than the model's context of 64"):
        train(cfg)


def test_a_missing_model_is_reported(make_config, tmp_path):
    cfg = make_config([*TINY, "model=hf", f"model.name_or_path={tmp_path}"], tmp_path / "run")
    cfg.model.name_or_path = str(tmp_path / "nothing")  # gone after the check: train() itself must say so
    with pytest.raises(UserError, match="could not load"):
        train(cfg)


def test_a_corrupt_checkpointed_model_is_reported(tiny_run, make_config, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run[0] / "final", model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cfg = make_config([*TINY, f"model.init_from={model_dir}"], tmp_path / "run")
    with pytest.raises(UserError, match="corrupt|could not load"):
        train(cfg)


@pytest.mark.slow
def test_a_compiled_model_trains_as_the_eager_one_and_saves_a_loadable_model(make_config, tmp_path):
    # train.compile=true: torch.compile (inductor, on CPU here) under the same Trainer; its losses match the
    # eager run's to float32 rounding, and final/ loads without the compiled wrapper's names.
    from gptfit.model.loading import load_model

    short = [*TINY, "train.max_steps=4", "train.eval_every=2", "decoding=none", "eval.explore=false"]
    eager = train(make_config(short, tmp_path / "eager"))
    compiled = train(make_config([*short, "train.compile=true"], tmp_path / "compiled"))
    assert compiled["status"] == "finished"
    for key in ("train/loss", "val/loss", "train/running_loss"):
        assert abs(compiled["final"][key] - eager["final"][key]) < 1e-3, key
    model = load_model(str(tmp_path / "compiled" / "final"))
    assert not any("_orig_mod" in k for k in model.state_dict())
