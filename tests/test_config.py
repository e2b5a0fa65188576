"""The config: every experiment composes, the schema rejects what it should, validation reports every problem."""

from __future__ import annotations

import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import OmegaConfBaseException

from gptfit.config import ConfigError, validate
from tests.conftest import ROOT, TINY, run_cli

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(compose_cfg, experiment):
    cfg = compose_cfg([f"+experiment={experiment}"])
    validate(cfg)
    assert cfg.name == experiment


def test_tiny_corpus_is_a_small_slice_of_the_embedded_corpus(compose_cfg):
    cfg = compose_cfg(["+experiment=tiny_corpus"])
    assert cfg.data.source == "python_docs"
    assert 1000 <= cfg.data.train_tokens <= 10000
    assert cfg.model.n_layer == 4 and cfg.model.n_embd == 128 and cfg.model.block_size == 64


@pytest.mark.parametrize("override", ["train.momentum=0.9", "train.lr=fast", "model.n_layer=2.5", "data.split_seed=x"])
def test_schema_rejects_unknown_keys_and_wrong_types(compose_cfg, override):
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)):
        compose_cfg([override])


def test_schema_applies_inside_experiment_files(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\ntrain:\n  max_step: 10\n")
    from gptfit.config import register

    register()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, OmegaConfBaseException), match="max_step"):
            compose("config", overrides=["+experiment=typo", "run_dir=x"])


def test_yaml_integers_are_accepted_where_floats_are_meant(compose_cfg):
    cfg = compose_cfg(["train.lr=1", "model.dropout=0"])
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0


def test_validation_reports_every_problem_at_once(compose_cfg):
    cfg = compose_cfg(
        [
            "model.n_embd=130",
            "model.n_head=4",
            "train.lr=-1",
            "logger.mode=sometimes",
            "data.train_tokens=8",
            "model.block_size=64",
            "model.dropout=1.5",
        ]
    )
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    problems = info.value.problems
    for key in ("model.n_embd", "train.lr", "logger.mode", "data.train_tokens", "model.dropout"):
        assert sum(p.startswith(key) for p in problems) == 1, (key, problems)
    assert all("\n" not in p for p in problems)


def test_nan_learning_rate_is_rejected(compose_cfg):
    with pytest.raises(ConfigError, match="train.lr"):
        validate(compose_cfg(["train.lr=nan"]))


def test_tiny_overrides_are_valid(compose_cfg):
    validate(compose_cfg(TINY))


def test_keys_added_with_plus_are_rejected_by_validation(compose_cfg):
    with pytest.raises(ConfigError, match="train.momentum: unknown key"):
        validate(compose_cfg(["+train.momentum=0.9"]))


def test_enumerating_a_secret_space_over_a_million_is_one_problem(compose_cfg):
    canaries = '+data.canaries=[{name: big, format: "ssn #########"}, {name: small, format: "pin ####"}]'
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg([canaries, "eval.canary_rank=enumerate"]))
    assert info.value.problems == [
        "data.canaries[0].format='ssn #########': 1e+09 fillings, over the 1e+06 eval.canary_rank=enumerate "
        "scores; use eval.canary_rank=auto (a skew-normal fit for it)"
    ]
    validate(compose_cfg([canaries]))  # auto: the large space is fitted, the small one enumerated
    with pytest.raises(ConfigError, match="eval.canary_rank"):
        validate(compose_cfg(["eval.canary_rank=exact"]))


def test_the_key_reference_is_the_schemas_comments_and_is_what_help_shows():
    from gptfit.config import Config
    from gptfit.config.reference import DOC_FILE, HELP_FILE, help_yaml, keys, markdown

    # Generated files stay generated: python -m gptfit.config.reference --write after changing a comment.
    assert HELP_FILE.read_text() == help_yaml(Config) and DOC_FILE.read_text() == markdown(Config)
    found = {k.name: k for k in keys(Config)}
    assert found["train.dp.delta"].default == "None" and "1 / N^1.1" in found["train.dp.delta"].help
    assert found["data.audit"].default == "(section)" and found["data.audit.probability"].default == "0.5"
    assert found["model"].help.startswith("`model.*`") and "decoding" not in found  # the group has its files
    result = run_cli("--help")
    assert result.returncode == 0 and "  eval.canary_rank = 'auto'" in result.stdout
    assert found["eval.canary_rank"].help in result.stdout and "experiment: capacity" in result.stdout


def test_every_optional_part_is_a_section_that_is_there_and_off_until_set(compose_cfg):
    cfg = validate(compose_cfg([]))
    parts = (cfg.data.duplicates, cfg.data.forget, cfg.data.subset, cfg.train.dp)
    assert not any(part.on for part in parts) and cfg.data.dedup.min_tokens is None and cfg.data.audit.sequences == 0
    # One key turns a part on, with the schema's defaults for the rest; the group file is the same switch.
    by_key = validate(compose_cfg(["data.duplicates.per_count=16"])).data.duplicates
    by_group = validate(compose_cfg(["+data/duplicates=ladder"])).data.duplicates
    assert by_key == by_group and by_key.on and by_key.counts == [1, 2, 4, 8, 16, 32, 64]
    assert validate(compose_cfg(["data.forget.sequences=8"])).data.forget.until_step == 800
    assert validate(compose_cfg(["+data/subset=half"])).data.subset.fraction == 0.5
