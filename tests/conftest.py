"""Shared fixtures: tiny configs composed through Hydra, and trained runs shared across tests (session scope)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A model and run small enough to train in seconds; tests override what they study.
TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=48",
    "data.train_tokens=1024",
    "data.vocab_size=512",
    "train.max_steps=20",
    "train.batch_size=8",
    "train.eval_every=5",
    "train.warmup_steps=2",
    "train.lr=5e-3",
    "eval.train_windows=16",
    "eval.val_windows=16",
    "eval.sequences=16",
    "eval.batch_size=16",
    "eval.prefix_tokens=8",
    "eval.suffix_tokens=8",
    "eval.heldout_prompts=2",
    "eval.prompt_tokens=4",
    "eval.copy_span=6",
    "logger=none",
]


# The fast tier (`make test-fast`: pytest -m "not slow") leaves out every test marked slow: those that take
# seconds on their own, and every test that uses a fixture that trains a model, runs a command or starts a
# browser (marked here, so that a new test on such a fixture is slow without being told).
HEAVY_FIXTURES = {
    "tiny_run",
    "tiny_corpus_run",
    "uninterrupted_run",
    "uninterrupted",
    "trained",
    "browser",
    "saved",
    "tiny_base",
    "hub_folders",
    "general_run",
    "memorized_run",
    "memorized",
    "run_dir",
    "shadow_sweep",
    "mini_ladder",
    "local_hf_models",
    "unlearned",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def one_thread():
    """Decode on one thread: tiny models gain nothing from a second, and on a shared 2-core machine an
    OpenMP thread waiting for a busy core can make a step a hundred times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def compose_cfg(cache_dir):
    """compose(overrides, run_dir) -> the config `python -m gptfit.train` would build."""
    from hydra import compose, initialize_config_dir

    from gptfit.config import register

    register()

    def _compose(overrides: list[str], run_dir: Path | str = "unused"):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=[f"data.cache_dir={cache_dir}", f"run_dir={run_dir}", *overrides])

    return _compose


@pytest.fixture(scope="session")
def make_config(compose_cfg):
    """make(overrides, run_dir) -> the checked config that `python -m gptfit.train` hands its recipe."""
    from gptfit.config import validate

    return lambda overrides, run_dir="unused": validate(compose_cfg(overrides, run_dir))


def run_cli(*args: str, module: str = "gptfit.train", cwd: Path = ROOT, env: dict | None = None, timeout=300):
    """Run a gptfit command in a subprocess, as a user would."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None removes a variable
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_run(make_config, tmp_path_factory):
    """A finished tiny run on the embedded corpus: (run_dir, summary)."""
    from gptfit.run.training import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    cfg = make_config([*TINY, "train.save_every=10", "train.save_total_limit=3"], run_dir)
    return run_dir, train(cfg)


# What each command fixture printed on stdout, by its run folder (the end-of-run summary is checked on it).
CONSOLE: dict[Path, str] = {}


@pytest.fixture(scope="session")
def tiny_corpus_run(tmp_path_factory, cache_dir) -> Path:
    """The folder of `python -m gptfit.train +experiment=tiny_corpus` itself: the memorizing model users see,
    logged to W&B offline as a user without a key would (tests/test_wandb.py reads what reached W&B)."""
    run_dir = tmp_path_factory.mktemp("tiny_corpus")
    result = run_cli(
        "+experiment=tiny_corpus",
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        env={"WANDB_MODE": None},  # the default logger's auto mode: offline without a key
    )
    assert result.returncode == 0, result.stderr[-2000:]
    CONSOLE[run_dir] = result.stdout
    return run_dir


# Long enough to be killed in the middle: a checkpoint and an evaluation every 5 steps.
LONG = [
    *TINY,
    "train.max_steps=40",
    "train.save_every=5",
    "train.save_total_limit=10",
    "eval.memorization_every=2",
    "eval.generation_every=2",
]


def launch(args: list[str], env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "gptfit.train", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def error_lines(stderr: str) -> list[str]:
    # The progress bar ends its lines with carriage returns; the error follows on the same terminal line.
    return [part.strip() for line in stderr.splitlines() for part in line.split("\r") if part.startswith("error:")]


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory, cache_dir) -> Path:
    """The folder of a LONG run that nothing interrupted: what every killed and resumed run must equal."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(*LONG, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def uninterrupted(uninterrupted_run) -> list[dict]:
    from gptfit.files import read_jsonl

    return read_jsonl(uninterrupted_run / "metrics.jsonl")


def assert_same_rows(resumed: list[dict], reference: list[dict]) -> None:
    """Every logged value equal, exactly: same windows, same RNG state, same operations in the same order."""
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]  # no duplicated or missing rows
    for a, b in zip(resumed, reference):
        assert a == b, (a["step"], {k: (a.get(k), b.get(k)) for k in {*a, *b} if a.get(k) != b.get(k)})
