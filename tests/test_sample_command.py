"""`python -m gptfit.sample` turns a run into completions, traces and figures (or one error line)."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from gptfit.model import GPTConfig, GPTForCausalLM
from tests.conftest import ROOT, run_cli

# ---------------------------------------------------------------------------------------------------
# The command line

TEXTS = ["The cat sat on the mat.", "A dog barked at the cat.", "The mat was red and the dog was brown."] * 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir):
    """A run directory with a tiny model and its tokenizer in final/, as a finished training run leaves it."""
    from gptfit.data.tokenizer import train_bpe

    tokenizer = train_bpe(TEXTS, 300, cache_dir)
    torch.manual_seed(0)
    model = GPTForCausalLM(
        GPTConfig(
            vocab_size=len(tokenizer),
            n_layer=2,
            n_head=2,
            n_embd=32,
            block_size=32,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
    )
    run = tmp_path_factory.mktemp("run")
    model.save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    return run


def sample_main(args: list[str]) -> None:
    """`python -m gptfit.sample <args>`, in this process (Hydra reads sys.argv)."""
    from gptfit.cli import hydra_main
    from gptfit.sample import main

    argv = sys.argv
    sys.argv = ["gptfit.sample", *args]
    try:
        hydra_main(main)()
    finally:
        sys.argv = argv


@pytest.mark.slow
def test_sample_command_end_to_end(run_dir, tmp_path):
    result = run_cli(
        f"run={run_dir}",
        "decoding=all",
        "prompt=The cat",
        "trace=true",
        "max_new_tokens=6",
        "decoding.beam.num_beams=2",
        "threads=1",
        module="gptfit.sample",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("greedy", "beam", "temp_low", "temp_high", "top_k", "top_p", "sample"):
        assert f"\n{name} (" in out  # one row per setting
        assert f"[{name}] step by step" in out
    assert "step   6: took" in out and "beam 1 <- " in out
    for figure in ("next_token_transforms.png", "greedy_path.png", "beam_tree.png"):
        assert (run_dir / "samples" / figure).stat().st_size > 1000
    assert "Traceback" not in result.stderr
    assert not (ROOT / ".hydra").exists() and not list(ROOT.glob("*.log"))  # Hydra wrote nothing


def test_sample_command_writes_figures_where_asked(run_dir, tmp_path, capsys):
    sample_main([f"run={run_dir}", "decoding=[top_p,sample]", "max_new_tokens=3", f"out={tmp_path / 'figs'}", "seed=2"])
    out = capsys.readouterr().out
    assert "top_p (sample)" in out and "seed: 2" in out and "prompt: end-of-text" in out
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["greedy_path.png", "next_token_transforms.png"]


def test_sample_command_prints_its_composed_config(run_dir):
    result = run_cli(
        f"run={run_dir}", "decoding=[greedy,beam]", "decoding.beam.num_beams=5", "--cfg", "job", module="gptfit.sample"
    )
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert list(cfg["decoding"]) == ["greedy", "beam"] and cfg["decoding"]["beam"]["num_beams"] == 5
    assert cfg["run"] == str(run_dir) and cfg["saved"] == "final"


BAD_ARGS = [
    (["run=/no/such/run"], "run='/no/such/run': no such run directory"),
    (["prompt=x"], "run=<run dir> is required"),
    (["run={run}", "prompt="], "prompt is empty"),
    (["run={run}", "decoding=nucleus"], "Could not find 'decoding/nucleus'"),
    (["run={run}", "max_new_tokens=0"], "max_new_tokens=0: must be >= 1"),
    (["run={run}", "decoding.top_p.top_p=1.5"], "decoding.top_p.top_p=1.5: must be in (0, 1]"),
    (["run={run}", "decoding=greedy", "decoding.beam.num_beams=2"], "decoding.beam.num_beams"),
    (["run={run}", "decoding.beam.num_beams=two"], "decoding.beam.num_beams"),
    (["run={run}", "saved=worst"], "saved='worst': one of final, best"),
    (["run={run}", "saved=best"], "no saved model in best/"),
    (["run={run}", "temperature=2"], "temperature"),
    (["run={run}", "trace"], "trace"),
    (["run={run}", "trace=maybe"], "maybe"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_sample_command_bad_input_is_one_line(args, message, run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample_main([a.format(run=run_dir) for a in args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_sample_command_bad_input_as_a_user_meets_it():
    result = run_cli("run=/no/such/run", module="gptfit.sample")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: run='/no/such/run': no such run directory"
    result = run_cli("run=/tmp", "temprature=2", module="gptfit.sample")  # a typo: an unknown key
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "temprature" in result.stderr
