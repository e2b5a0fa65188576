"""Unlearning (unlearn.method): the methods' losses, a real sweep through the command from a source that
memorized its forget set, the retrained model it is measured against, the relearning attack, bad input, and
resume after SIGKILL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gptfit.config import ConfigError, UnlearnConfig, validate
from gptfit.files import read_jsonl
from gptfit.measures.base import declares
from gptfit.measures.unlearning import Unlearning
from gptfit.model.gpt import GPTConfig, GPTForCausalLM
from gptfit.run.checkpoints import COMPLETE
from gptfit.unlearning import build_method
from gptfit.unlearning.base import mean_nll, sequence_log_prob
from gptfit.unlearning.localize import projections
from tests.conftest import TINY, assert_same_rows, error_lines, launch, run_cli, wait_for

# The source: a small model that plants 4 forget sequences of 8 + 8 tokens 16 times and trains on them to
# its last step, long enough to recite them.
SOURCE = [
    *(o for o in TINY if o.split("=")[0] not in ("train.max_steps", "train.eval_every", "logger")),
    "data.forget.sequences=4",
    "data.forget.copies=16",
    "data.forget.until_step=149",
    "train.max_steps=150",
    "train.eval_every=150",
    "eval.explore=false",
    "decoding=none",
]
UNLEARN = [
    "+experiment=unlearning",
    "unlearn.source=[" + ",".join(f"'{o}'" for o in SOURCE) + "]",
    "train.max_steps=10",
    "train.batch_size=8",
    "train.lr=5e-3",
    "train.eval_every=5",
    "train.save_every=5",
    "unlearn.relearn_steps=2",
    "eval.heldout_prompts=2",
    "eval.prompt_tokens=4",
    "logger=none",
]


@pytest.fixture(scope="module")
def unlearned(tmp_path_factory, cache_dir) -> Path:
    """A two-job sweep (gradient ascent and NPO) from a source trained into the cache on first use."""
    sweep = tmp_path_factory.mktemp("unlearning")
    result = run_cli(
        *UNLEARN,
        "unlearn.method=gradient_ascent,npo",
        "seed=1337",
        f"data.cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def job(sweep: Path, method: str) -> Path:
    for folder in sorted(p for p in sweep.iterdir() if (p / "config.yaml").exists()):
        if f"method: {method}" in (folder / "config.yaml").read_text():
            return folder
    raise AssertionError(f"no {method} job in {sweep}")


def test_gradient_ascent_takes_out_what_the_source_memorized(unlearned):
    rows = read_jsonl(job(unlearned, "gradient_ascent") / "metrics.jsonl")
    start, end = rows[0], rows[-1]
    assert [r["step"] for r in rows] == [0, 5, 10]
    # The starting model is the source's: it recites its forget set and tells it from held-out text.
    assert start["forget/extraction_rate"] >= 0.75 and start["forget/mia/loss/auc"] >= 0.9
    assert end["forget/extraction_rate"] == 0.0 and end["forget/loss"] > start["forget/loss"] + 1.0
    for row in rows:
        assert 0.0 <= row["forget/quality"] <= 1.0
        assert math.isfinite(row["forget/privleak/loss"])
        measured = [k for k in row if k.startswith(("forget/mia/", "forget/privleak/", "forget/quality"))]
        assert measured and all(declares(Unlearning, k) for k in measured)


def test_the_run_records_where_it_started_and_its_relearning_attack(unlearned):
    run = job(unlearned, "npo")
    summary = json.loads((run / "summary.json").read_text())
    unlearn = summary["config"]["unlearn"]
    assert Path(unlearn["source_dir"], "final").is_dir() and Path(unlearn["retrained"]).is_dir()
    assert summary["config"]["data"]["forget"]["until_step"] == 0  # no training window holds the forget set
    for data in ("forget", "heldout"):
        for who in ("unlearned", "retrained"):
            curve = summary["relearn"][data][who]
            assert [p["step"] for p in curve] == [0, 1, 2]
            assert all(0.0 <= p["extraction"] <= 1.0 and p["loss"] > 0 for p in curve)
    assert (run / "relearn.png").stat().st_size > 0 and (run / "sequences.parquet").exists()


def test_the_retrained_model_never_saw_the_forget_set(unlearned):
    from gptfit.data.corpus import run_corpus
    from gptfit.model.loading import load_model
    from gptfit.record import RunRecord
    from gptfit.run.unlearning import forget_tokens

    run = RunRecord.read(job(unlearned, "npo"))
    config = run.config
    corpus = run_corpus(config.model, config.data, config.eval)
    forget = forget_tokens(corpus)
    source = load_model(str(Path(config.unlearn.source_dir) / "final")).eval()
    retrained = load_model(config.unlearn.retrained).eval()
    with torch.no_grad():
        assert float(mean_nll(retrained, forget)) > float(mean_nll(source, forget)) + 2.0


def test_an_unlearning_run_killed_with_sigkill_resumes_to_the_same_metrics(unlearned, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*UNLEARN, "hydra.mode=RUN", "unlearn.method=gradient_ascent", "seed=1337"]
    args += [f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    proc = launch(args)
    wait_for(run_dir / "checkpoints" / "checkpoint-5" / COMPLETE, proc, timeout=300)
    proc.kill()
    proc.wait()
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["resumed_from_step"] >= 5
    assert_same_rows(
        read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(job(unlearned, "gradient_ascent") / "metrics.jsonl")
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, line",
    [
        (["unlearn.method=forget_everything"], "unlearn.method='forget_everything': one of gradient_ascent"),
        (["unlearn.method=npo", "unlearn.run={unfinished}"], "holds no finished run (status: unfinished)"),
        (["unlearn.method=npo", "unlearn.run={no_forget_set}"], "never trained on a forget set"),
    ],
)
def test_bad_unlearning_input_is_one_line_and_leaves_no_folder(overrides, line, tiny_run, tmp_path, cache_dir):
    unfinished = tmp_path / "unfinished"
    (unfinished / "final").mkdir(parents=True)
    (unfinished / "summary.json").write_text(json.dumps({"status": "running"}))
    folders = {"unfinished": unfinished, "no_forget_set": tiny_run[0]}  # tiny_run planted no forget set
    overrides = [o.format(**folders) for o in overrides]
    run_dir = tmp_path / "run"
    args = [*UNLEARN, "hydra.mode=RUN", *overrides, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and line in lines[0], result.stderr[-2000:]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "overrides, line",
    [
        (["unlearn.strength=-1"], "unlearn.strength=-1.0: must be >= 0"),
        (["unlearn.run=/no/such/run"], "unlearn.run='/no/such/run': no such folder; name a finished run's folder"),
        (["unlearn.method=localize", "unlearn.strength=100"], "unlearn.strength=100.0: localize cuts this percentage"),
        (["unlearn.beta=0"], "unlearn.beta=0.0: must be > 0"),
        (["unlearn.relearn_steps=-1"], "unlearn.relearn_steps=-1: must be >= 0"),
    ],
)
def test_bad_unlearning_values_are_config_problems(overrides, line, compose_cfg):
    """Checked with the rest of the config, before anything loads (the command turns them into one line)."""
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(["+experiment=unlearning", "unlearn.method=npo", *overrides]))
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(line), info.value.problems


def tiny_model(seed: int = 0) -> GPTForCausalLM:
    torch.manual_seed(seed)
    return GPTForCausalLM(GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=12)).eval()


def test_the_methods_losses_are_their_formulas():
    model, start = tiny_model(0), tiny_model(1)
    forget, retain = torch.randint(0, 40, (4, 12)), torch.randint(0, 40, (4, 12))
    batch = {"forget_ids": forget, "input_ids": retain, "labels": retain}
    with torch.no_grad():
        nll_forget, nll_retain = float(mean_nll(model, forget)), float(mean_nll(model, retain))
        ratio = sequence_log_prob(model, forget) - sequence_log_prob(start, forget)

        def loss(method, **kw):
            built = build_method(UnlearnConfig(method=method, **kw))
            built.prepare(model, start, forget, retain)
            return float(built.loss(model, batch))

        assert loss("gradient_ascent") == pytest.approx(-nll_forget, rel=1e-6)
        assert loss("gradient_difference", strength=2.0) == pytest.approx(nll_retain - 2 * nll_forget, rel=1e-6)
        assert loss("retain") == pytest.approx(nll_retain, rel=1e-6)
        npo = float((2 / 0.1) * F.softplus(0.1 * ratio).mean())
        assert loss("npo", beta=0.1) == pytest.approx(npo, rel=1e-5)
    # The per-sequence likelihood by hand: the sum of each predicted token's log-probability.
    with torch.no_grad():
        logits = model(input_ids=forget[:1]).logits[0, :-1]
        by_hand = sum(float(F.log_softmax(logits[t], -1)[forget[0, t + 1]]) for t in range(11))
        assert float(sequence_log_prob(model, forget[:1])[0]) == pytest.approx(by_hand, rel=1e-5)


def test_localize_cuts_the_share_of_units_asked_and_the_saved_weights_need_no_hook():
    model, start = tiny_model(0), tiny_model(0)
    forget, retain = torch.randint(0, 40, (6, 12)), torch.randint(0, 40, (6, 12))
    method = build_method(UnlearnConfig(method="localize", strength=25.0))
    method.prepare(model, start, forget, retain)

    def zeroed() -> int:  # MLP units whose output weights are all zero
        return sum(int((m.weight == 0).all(dim=0).sum()) for m in projections(model))

    assert zeroed() == 0  # step 0 is the starting model: the cut comes with the first step
    loss = method.loss(model, {"input_ids": retain, "labels": retain})
    units = sum(m.weight.shape[1] for m in projections(model))  # 2 blocks x 64 units
    assert method.cut_units == round(0.25 * units) and zeroed() == method.cut_units
    # A plain copy (no hooks) computes what the hooked model does: the cut units' output weights are zero.
    plain = tiny_model(0)
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=tokens).logits, model(input_ids=tokens).logits, atol=1e-6)
    # Training cannot grow a cut unit back: its activation is held at zero, so its weights get no gradient.
    loss.backward()
    for m in projections(model):
        cut = (m.weight == 0).all(dim=0)
        assert torch.all(m.weight.grad[:, cut] == 0)


def test_the_report_has_an_unlearning_table_and_plane(unlearned):
    result = run_cli(str(unlearned), module="gptfit.report")
    assert result.returncode == 0, result.stderr[-2000:]
    report = (unlearned / "report.md").read_text()
    assert "## Unlearning" in report and "| gradient_ascent | 1337 |" in report and "| npo | 1337 |" in report
    retrained = next(line for line in report.splitlines() if line.startswith("| retrained without the forget set"))
    cells = [c.strip() for c in retrained.strip("|").split("|")]
    assert float(cells[2]) <= 0.25  # the retrained model does not recite a set it never saw
    assert "## Forgetting" not in report  # an unlearning run's forget set was never trained on in it
    assert (unlearned / "unlearning.png").stat().st_size > 0
