"""Fine-tuning runs: the base model (model=base) trained once into the cache and reused, a corrupt or
half-written one trained again; each method through the training recipe, what every run saves, resume under
LoRA and head-only tuning; and the same methods on local GPT-2 and GPT-NeoX folders (model=hf)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig

from gptfit.files import METRICS, SUMMARY, read_jsonl
from gptfit.measures.pretraining import base_windows, exact
from gptfit.metrics.scoring import score_sequences
from gptfit.metrics.sequences import decoded_matches
from gptfit.model import GPTConfig, GPTForCausalLM
from gptfit.model.loading import load_tokenizer
from gptfit.run import base as base_cache
from tests.conftest import TINY, run_cli
from tests.wandb_log import find_run

# A base small enough to train in seconds: the pretrain_base experiment at TINY's size, on more tokens.
TINY_BASE = [
    "+experiment=pretrain_base",
    *[o for o in TINY if not o.startswith(("data.train_tokens", "train.max_steps", "train.eval_every", "logger"))],
    "data.train_tokens=16384",
    "train.max_steps=40",
    "train.eval_every=40",
    "decoding=none",
]
# The finetune_narrow experiment at a toy size: the tiny base on 512 tokens of the grammar language.
TINY_FINETUNE = [
    "+experiment=finetune_narrow",
    *[o for o in TINY if not o.startswith(("model.", "data.vocab_size", "train.max_steps", "train.eval_every"))],
    "model.block_size=48",
    "data.train_tokens=512",
    "train.max_steps=12",
    "train.eval_every=6",
    "train.save_every=6",
    "train.save_total_limit=3",
    "decoding=greedy",
    "eval.general_prompts=2",
]


@pytest.fixture(scope="session")
def tiny_base(make_config):
    """The tiny base's saved model (its final/ folder), trained into the session's cache once."""
    return base_cache.ensure_base(make_config([*TINY_BASE, "logger=none"], "unset"))


def finetune(make_config, tiny_base, run_dir, *overrides):
    """A fine-tuning run of the tiny base through the recipe (the command resolves model=base the same way)."""
    from gptfit.run.training import train

    config = make_config([*TINY_FINETUNE, f"model.init_from={tiny_base}", *overrides], run_dir)
    return train(config)


@pytest.mark.slow
def test_the_base_is_trained_once_then_reused(tiny_base, make_config, monkeypatch):
    record = json.loads((tiny_base.parent / base_cache.MARKER).read_text())
    assert record["val/loss"] < 6.0  # it learned something of its corpus (ln 512 = 6.24 at the start)
    import gptfit.run.training

    monkeypatch.setattr(gptfit.run.training, "train", lambda *a, **k: pytest.fail("the cached base was trained again"))
    assert base_cache.ensure_base(make_config([*TINY_BASE, "logger=none"], "unset")) == tiny_base


@pytest.mark.slow
def test_a_corrupt_or_half_written_base_is_trained_again(tiny_base, make_config, cache_dir, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(f"{cache_dir}/stdlib", cache / "stdlib")  # the parsed docstrings: not parsed again
    config = make_config([*TINY_BASE, "train.max_steps=2", "logger=none", f"data.cache_dir={cache}"], "unset")
    final = base_cache.ensure_base(config)
    weights = final / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # corrupt: it is trained again, never loaded
    assert not base_cache.cached(final.parent, base_cache.base_key(config))
    assert base_cache.ensure_base(config) == final and AutoModelForCausalLM.from_pretrained(final) is not None
    (final.parent / base_cache.MARKER).unlink()  # half-written: no marker
    assert base_cache.ensure_base(config) == final and (final.parent / base_cache.MARKER).exists()


@pytest.mark.slow
def test_the_command_fine_tunes_the_cached_base_with_lora(tiny_base, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    base = "model.base=[" + ",".join(f"'{o}'" for o in TINY_BASE) + "]"
    logged = ["logger=wandb", "logger.log_model=true"]  # offline: W&B's artifacts wait for `wandb sync`
    result = run_cli(
        *TINY_FINETUNE,
        base,
        "train.finetune=lora",
        *logged,
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training the base model" not in result.stderr  # the fixture's base, found by its hash
    # Its artifacts name the base it started from (offline W&B cannot `use_artifact`: the metadata says it).
    artifacts = [
        a for a in find_run(run_dir / "wandb").artifacts if a.type in ("dataset", "tokenizer", "model", "table")
    ]
    assert sorted(a.type for a in artifacts) == ["dataset", "model", "model", "table", "tokenizer"]
    assert all(json.loads(a.metadata)["base"] == str(tiny_base) for a in artifacts)
    assert sorted(alias for a in artifacts if a.type == "model" for alias in a.aliases if alias != "latest") == [
        "best",
        "final",
    ]
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["config"]["model"]["init_from"] == str(tiny_base)
    assert 0 < summary["trainable_params"] < 0.25 * summary["total_params"]
    rows = read_jsonl(run_dir / METRICS)
    assert rows[0]["forgetting/base"] == 0.0 and all("general/base/bpb" in r for r in rows)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")  # merged: a plain model, no adapter in it
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert (run_dir / "adapter" / "adapter_config.json").exists()
    assert {"mia/loss/auc", "mem/extraction_rate_train"} <= summary["final"].keys()  # scored on the adapted model
    # The commands that read a finished run work on it as on any other.
    sampled = run_cli(f"run={run_dir}", "decoding=[greedy]", "prompt='the cat'", module="gptfit.sample")
    assert sampled.returncode == 0 and "greedy" in sampled.stdout, sampled.stderr[-1500:]
    page = run_cli(f"run={run_dir}", f"out={tmp_path / 'page.html'}", module="gptfit.explore")
    assert page.returncode == 0 and (tmp_path / "page.html").stat().st_size > 0, page.stderr[-1500:]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "top_layers", "head"])
def test_each_method_trains_what_it_says_and_saves_a_plain_model(tiny_base, make_config, tmp_path, method):
    summary = finetune(make_config, tiny_base, tmp_path / "run", f"train.finetune={method}")
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    changed = {n for n, p in tuned.named_parameters() if not torch.equal(p, base.state_dict()[n])}
    if method == "full":
        assert summary["trainable_params"] == summary["total_params"] and "transformer.wte.weight" in changed
    elif method == "top_layers":  # the last block and the final norm alone
        assert changed and all(n.startswith(("transformer.h.1.", "transformer.ln_f")) for n in changed)
    else:  # the untied output layer alone
        assert changed == {"lm_head.weight"} and not tuned.config.tie_word_embeddings
    assert summary["trainable_params"] == sum(base.state_dict()[n].numel() for n in changed) or method == "full"
    assert summary["final"]["forgetting/base"] != 0.0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "head"])
def test_resume_under_a_method_equals_the_uninterrupted_run(tiny_base, make_config, tmp_path, method):
    full_dir = tmp_path / "full"
    finetune(make_config, tiny_base, full_dir, f"train.finetune={method}")
    cut = tmp_path / "cut"  # the same run, as if killed after its checkpoint at step 6
    shutil.copytree(full_dir, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-12")
    shutil.rmtree(cut / "final")
    summary = finetune(make_config, tiny_base, tmp_path / "unused", f"train.finetune={method}", f"train.resume={cut}")
    assert summary["resumed_from_step"] == 6
    full, resumed = read_jsonl(full_dir / METRICS), read_jsonl(cut / METRICS)
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(full, resumed):
        for key in ("train/loss", "val/loss", "general/base/loss", "forgetting/base"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


@pytest.fixture(scope="module")
def hub_folders(tiny_run, tmp_path_factory):
    """Local GPT-2 and GPT-NeoX folders of the tiny run's vocabulary, each with its tokenizer, as from the hub."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_run[0] / "tokenizer")
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    configs = {
        "gpt2": GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, **ids),
        "gpt_neox": GPTNeoXConfig(
            num_hidden_layers=2,
            num_attention_heads=2,
            hidden_size=32,
            intermediate_size=64,
            max_position_embeddings=64,
            **ids,
        ),
    }
    folders = {}
    for family, config in configs.items():
        torch.manual_seed(0)
        folders[family] = tmp_path_factory.mktemp(family)
        AutoModelForCausalLM.from_config(config).save_pretrained(folders[family])
        tokenizer.save_pretrained(folders[family])
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
@pytest.mark.parametrize("method", ["full", "lora", "top_layers", "head"])
def test_hub_models_fine_tune_under_every_method(hub_folders, make_config, tmp_path, family, method):
    from gptfit.run.training import train

    overrides = ["model=hf", f"model.name_or_path={hub_folders[family]}", f"train.finetune={method}"]
    general = "eval.general=[{name:docs,source:python_docs,windows:4}]"
    summary = train(make_config([*TINY, *overrides, general, "train.max_steps=4", "decoding=greedy"], tmp_path))
    assert summary["status"] == "finished" and summary["trainable_params"] <= summary["total_params"]
    assert {"general/docs/loss", "forgetting/docs", "gen/greedy/distinct_2"} <= summary["final"].keys()
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "final")  # a plain model of the family
    assert saved.config.model_type == family and not any("lora" in n for n, _ in saved.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.finetune=lora", "train.lora.target_modules=[c_attn,nope]"], "train.lora.target_modules="),
        (["train.finetune=top_layers", "train.finetune_layers=5"], "train.finetune_layers=5: the model has 2 blocks"),
        (["train.finetune=lora", "train.lora.r=0"], "train.lora.r=0: must be >= 1"),
    ],
)
def test_a_bad_fine_tuning_value_is_one_line_and_leaves_no_folder(tmp_path, cache_dir, overrides, message):
    run_dir = tmp_path / "run"
    result = run_cli(*TINY, *overrides, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}")
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-1500:]
    assert not run_dir.exists()  # nothing half-written


@pytest.mark.slow
def test_the_base_key_holds_only_the_fields_that_shape_its_weights(make_config, monkeypatch):
    config = make_config([*TINY_BASE, "logger=none"], "unset")
    key = base_cache.base_key(config)
    # What cannot change the weights: where it writes, logging, evaluation, threads.
    quiet = make_config([*TINY_BASE, "logger=wandb", "train.threads=1", "eval.sequences=7"], "elsewhere")
    assert base_cache.base_key(quiet) == key
    # A field added to the schema at its default (a new knob of train) leaves the key as it was.
    grown = dataclasses.make_dataclass("GrownTrain", [("new_knob", int, 3)], bases=(type(config.train),))
    fields = {f.name: getattr(config.train, f.name) for f in dataclasses.fields(config.train)}
    monkeypatch.setattr(config, "train", grown(**fields))
    assert base_cache.base_key(config) == key
    config.train.new_knob = 4  # the same field off its default shapes the weights
    assert base_cache.base_key(config) != key
    assert base_cache.weight_fields(config)["train"]["new_knob"] == 4
    assert base_cache.base_key(make_config([*TINY_BASE, "train.lr=1e-2"], "unset")) != key


def test_what_greedy_decoding_reproduces_is_read_from_one_scoring_pass():
    """pretraining.exact (teacher-forced argmax on every suffix token) against greedy decoding itself, on a model
    made to memorize two sequences and on the same model untrained."""
    torch.manual_seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=64, n_layer=2, n_head=2, n_embd=32, block_size=24))
    untrained = copy.deepcopy(model)
    memorized, other = torch.randint(0, 64, (2, 24)), torch.randint(0, 64, (6, 24))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        model(input_ids=memorized, labels=memorized).loss.backward()
        optimizer.step()
    windows = torch.cat([memorized, other])
    for m in (model, untrained):
        greedy = decoded_matches(m.eval(), windows, 12, {"do_sample": False, "num_beams": 1}, 8, seed=0).all(1)
        assert torch.equal(exact(score_sequences(m, windows, 8), 12), greedy)
    assert exact(score_sequences(model, windows, 8), 12).tolist() == [True] * 2 + [False] * 6
    assert not exact(score_sequences(untrained, windows, 8), 12).any()


@pytest.mark.slow
def test_a_fine_tuning_follows_what_its_base_memorized_of_its_own_training_text(tiny_base, make_config, tmp_path):
    summary = finetune(make_config, tiny_base, tmp_path / "run", "eval.pretraining_sequences=64", "train.lr=1e-2")
    config = make_config([*TINY_FINETUNE, f"model.init_from={tiny_base}"], tmp_path / "unused")
    prefix, length = config.eval.prefix_tokens, config.eval.prefix_tokens + config.eval.suffix_tokens
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    windows = base_windows(Path(tiny_base), load_tokenizer(str(tiny_base)), 64, length)
    held = int(exact(score_sequences(base, windows, 64), prefix).sum())
    rows = [r for r in read_jsonl(tmp_path / "run" / METRICS) if "pretraining/candidates" in r]
    assert rows[0]["step"] == 0 and all(rows[-1][k] == v for k, v in summary["final"].items() if k in rows[-1])
    assert all(r["pretraining/candidates"] == len(windows) == 64 and r["pretraining/memorized"] == held for r in rows)
    if held:  # the base reproduces them at step 0; the fine-tuning at a high rate makes them less likely
        assert rows[0]["pretraining/extraction"] == 1.0 and rows[-1]["pretraining/loss"] > rows[0]["pretraining/loss"]
    else:
        assert "pretraining/extraction" not in rows[-1]
