"""The command line as a user meets it: one line per mistake, a non-zero exit, no traceback, no stray run."""

from __future__ import annotations

import time

import pytest

from tests.conftest import CONSOLE, TINY, run_cli

# (overrides, what the one line must say)
BAD_INPUTS = [
    (["train.lr=abc"], "train.lr"),
    (["train.lr=nan"], "train.lr=nan: must be a finite number"),
    (["train.momentum=0.9"], "Key 'momentum' not in 'TrainConfig'"),
    (["+train.momentum=0.9"], "train.momentum: unknown key"),
    (["model=huge"], "Available options in 'model': base, hf, small, tiny"),
    (["+experiment=nope"], "Could not find 'experiment/nope'"),
    (["model.n_layer=two"], "model.n_layer"),
    (["model.n_embd=100", "model.n_head=3"], "must be divisible by model.n_head=3"),
    (["logger.mode=loud"], "logger.mode='loud': one of auto, online, offline, disabled"),
    (["train.device=tpu"], "train.device='tpu'"),
    (["train.precision=fp16"], "train.precision='fp16': one of fp32, bf16"),
    (["data.train_tokens=10", "model.block_size=64"], "data.train_tokens=10: must be at least model.block_size=64"),
    (["data=text"], "data.path=None: data=text needs a path"),
    (["data=text", "data.path=/no/such/corpus.txt"], "no such file or folder"),
    (["model=hf", "model.name_or_path=/no/such/model"], "model.name_or_path='/no/such/model': no such directory"),
    (["data.train_tokens=99999999"], "data.train_tokens=99999999: the corpus has only"),
    (["train.resume=/no/such/run"], "train.resume='/no/such/run': no such run directory"),
    (["model.init_from=/no/such/run"], "model.init_from='/no/such/run': no such directory"),
    (["decoding.top_p.top_p=1.5"], "decoding.top_p.top_p=1.5: must be in (0, 1]"),
    (["decoding.temp_low.temperature=-1"], "decoding.temp_low.temperature=-1.0: must be a finite number >= 0"),
    (["decoding.top_k.top_k=-3"], "decoding.top_k.top_k=-3: must be >= 0"),
    (["decoding.beam.num_beams=0"], "decoding.beam.num_beams=0: must be >= 1"),
    (["train.batch_size=0"], "train.batch_size=0: must be > 0"),
    (["eval.prefix_tokens=40", "eval.suffix_tokens=40"], "must fit model.block_size=48"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed=-1: must be in 0 .. 4294967295 (2**32 - 1)"),
    (["data.split_seed=4294967296"], "data.split_seed=4294967296: must be in 0 .. 4294967295"),
    (["train.threads=100000"], "train.threads=100000: must be in 0 .. "),
    (
        ["+data/duplicates=ladder", "data.duplicates.counts=[0,2]"],
        "data.duplicates.counts=[0, 2]: every count must be >= 1",
    ),
    (
        ["+data/duplicates=ladder", "data.duplicates.per_count=100000"],
        "data.duplicates: 800000 sequences of 16 tokens are needed",
    ),
    (
        ["+data/forget=default", "data.forget.until_step=20"],
        "data.forget.until_step=20: must be below train.max_steps=20",
    ),
    (
        ["+data/forget=default", "data.forget.until_step=10", "train.sampling=epochs"],
        "data.forget: works with train.sampling=random only",
    ),
]


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _cut_checkpoints(tiny_run, tmp_path):
    """A copy of a finished run whose every checkpoint has a truncated optimizer state."""
    import shutil

    run = tmp_path / "cut_run"
    shutil.copytree(tiny_run[0], run)
    for opt in run.glob("checkpoints/checkpoint-*/optimizer.pt"):
        opt.write_bytes(opt.read_bytes()[:100])
    return run


def _cut_model(tiny_run, tmp_path):
    import shutil

    model = tmp_path / "cut_model"
    shutil.copytree(tiny_run[0] / "final", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return model


# Inputs that need files: (name, make(tiny_run, tmp_path) -> overrides, what the one line must say)
BAD_FILES = [
    ("empty corpus file", lambda r, t: ["data=text", f"data.path={_write(t / 'empty.txt', b'')}"], "is empty"),
    (
        "blank corpus file",
        lambda r, t: ["data=text", f"data.path={_write(t / 'blank.txt', b'  ' + bytes([10]) * 3)}"],
        "is empty",
    ),
    (
        "binary corpus file",
        lambda r, t: ["data=text", f"data.path={_write(t / 'x.bin', bytes(range(256)) * 4)}"],
        "looks binary",
    ),
    (
        "corpus not UTF-8",
        lambda r, t: ["data=text", f"data.path={_write(t / 'l1.txt', 'café crème'.encode('latin-1') * 50)}"],
        "not UTF-8",
    ),
    (
        "corpus folder without files",
        lambda r, t: ["data=text", f"data.path={_write(t / 'd' / '.keep', b'').parent}"],
        "holds no text files",
    ),
    (
        "unreadable model config",
        lambda r, t: ["model=hf", f"model.name_or_path={_write(t / 'm' / 'config.json', b'{oops').parent}"],
        "could not load",
    ),
    (
        "truncated model weights",
        lambda r, t: ["model=hf", f"model.name_or_path={_cut_model(r, t)}"],
        "could not load its weights",
    ),
    ("truncated checkpoints", lambda r, t: [f"train.resume={_cut_checkpoints(r, t)}"], "no complete checkpoint"),
    ("run folder not writable", lambda r, t: [f"hydra.run.dir={_write(t / 'file', b'x')}/run"], "hydra.run.dir"),
]


@pytest.mark.slow
@pytest.mark.parametrize("make, message", [(m, msg) for _, m, msg in BAD_FILES], ids=[n for n, _, _ in BAD_FILES])
def test_bad_files_get_one_clear_line(make, message, tiny_run, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    overrides = make(tiny_run, tmp_path)
    result = run_cli(*TINY, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [part for line in result.stderr.splitlines() for part in line.split("\r") if part.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_line(overrides, message, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_cli(*TINY, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", *overrides)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()  # nothing left behind that looks like a run


def test_several_config_problems_are_reported_together():
    result = run_cli("train.lr=-1", "logger.mode=x", "model.dropout=2")
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 3


def test_a_config_error_is_reported_quickly():
    start = time.time()
    result = run_cli("train.lr=-1")
    assert result.returncode == 2
    # Generous bound for a loaded CI machine; the measured figure is in the README.
    assert time.time() - start < 10


@pytest.mark.slow
def test_help_and_cfg_job_work():
    help_text = run_cli("--help")
    assert help_text.returncode == 0 and "experiment: " in help_text.stdout
    job = run_cli("+experiment=tiny_corpus", "--cfg", "job")
    assert job.returncode == 0 and "name: tiny_corpus" in job.stdout and "train_tokens: 3072" in job.stdout


@pytest.mark.slow
def test_a_tiny_run_through_the_command_line(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_cli(*TINY, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", "train.max_steps=5")
    assert result.returncode == 0, result.stderr
    assert "step      5/5 | train" in result.stdout
    assert (run_dir / "summary.json").exists() and (run_dir / ".hydra" / "config.yaml").exists()


def test_wandb_offline_run_is_written_inside_the_run_directory(tiny_corpus_run):
    runs = list((tiny_corpus_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    # The run ends by naming that folder and the command that uploads it.
    assert f"W&B (offline): {runs[0]}; upload it with `wandb sync {runs[0]}`" in CONSOLE[tiny_corpus_run]


@pytest.mark.slow
def test_the_wandb_mode_environment_variable_is_checked(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        "train.max_steps=2",
        "logger=wandb",
        "logger.mode=offline",
    ]
    bad = run_cli(*args, env={"WANDB_MODE": "loud"})
    assert bad.returncode == 2 and not run_dir.exists()
    assert bad.stderr.strip() == (
        "error: WANDB_MODE='loud' (environment): W&B accepts online, offline or disabled; "
        "set one of those or unset it and use logger.mode"
    )
    empty = run_cli(*args, env={"WANDB_MODE": ""})  # set but empty counts as unset
    assert empty.returncode == 0, empty.stderr[-2000:]
    assert list((run_dir / "wandb").glob("offline-run-*/*.wandb"))
