"""The body of `python -m gptfit.explore` and of the page every run writes at its end (eval.explore):
gather a run's views (gptfit/show/explore_data.py) and write them as one page (explore_page.py). A sweep's
page (from gptfit.report) holds every run's curves, the ladder figures and a link to each run's page."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from gptfit.errors import UserError
from gptfit.run.tracking import SAMPLES, read_jsonl, write_text_atomic
from gptfit.show import explore_data
from gptfit.show.explore_page import page

FILE = "explore.html"


def held_out_prompts(run_dir: Path) -> list[list[int]]:
    """The held-out prompts the run's samples started from, in order, each once."""
    seen, out = set(), []
    for r in read_jsonl(run_dir / SAMPLES):
        key = tuple(r.get("prompt_ids") or ())
        if r.get("source") == "held-out" and key and key not in seen:
            seen.add(key)
            out.append(list(key))
    return out


def explore_run(run_dir: Path, cfg, model, tokenizer, corpus, out: Path | None = None) -> Path:
    """Write the run's page (by default <run>/explore.html); return its path."""
    e = cfg.eval
    prompts = [tokenizer.encode(p, add_special_tokens=False) for p in e.prompts] + held_out_prompts(run_dir)
    if not prompts:
        prompts = [corpus.val[: e.prompt_tokens].tolist()]
    attention_ids = tokenizer.encode(e.attention_prompt, add_special_tokens=False)[: cfg.model.block_size]
    data = {
        "curves": explore_data.curves(run_dir),
        "text": explore_data.text(run_dir, model),
        "samples": explore_data.samples(run_dir, corpus.train, corpus.eot_id, e.copy_span),
        "decoding": explore_data.decoding(model, prompts, corpus.eot_id, cfg.seed),
        "attention": explore_data.attention(model, attention_ids),
        "vocab": explore_data.vocabulary(tokenizer),
    }
    out = out or run_dir / FILE
    write_text_atomic(
        out, page(data, f"gptfit run: {cfg.name}, {len(corpus.train):,} training tokens ({run_dir.name})")
    )
    return out


def explore_saved_run(options, model_dir: Path) -> Path:
    """`python -m gptfit.explore`: the run's config and corpus from its folder, its saved model, its page."""
    from gptfit.config import Config
    from gptfit.model.loading import load_pretrained
    from gptfit.run.training import prepare_corpus

    run_dir = Path(options.run).expanduser()
    if not (run_dir / "config.yaml").exists():
        raise UserError(
            f"run={options.run!r}: no config.yaml there; give a run directory (a saved model alone "
            "has no metrics, table or samples to show)"
        )
    if options.threads:
        torch.set_num_threads(options.threads)
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml"))
    model, tokenizer = load_pretrained(str(model_dir), attn_implementation="eager")
    corpus = prepare_corpus(cfg)
    return explore_run(run_dir, cfg, model, tokenizer, corpus, Path(options.out) if options.out else None)


def explore_sweep(sweep: Path, runs: list[dict], ladders: list[dict]) -> Path:
    """The sweep's page: each finished run's curves with a link to its page, and the ladder figures
    ([{"title", "series": [[name, xs, ys]]}])."""
    entries = []
    for r in runs:
        run_dir = sweep / r["job"]
        if r["status"] == "finished":
            link = f"{r['job']}/{FILE}" if (run_dir / FILE).exists() else None
            entries.append({"name": f"job {r['job']}", "curves": explore_data.curves(run_dir), "link": link})
    data = {"runs": entries, "ladder": ladders}
    out = sweep / FILE
    write_text_atomic(out, page(data, f"gptfit sweep: {sweep.name}", views=("curves",)))
    return out
