"""Writing the explorer pages: a run's (its views gathered by explore_data.py, laid out by explore_page.py)
and a sweep's (every run's curves, with a link to each run's page, and the ladder figures)."""

from __future__ import annotations

from pathlib import Path

from gptfit.config import EvalConfig
from gptfit.data.tokenizer import encode_text
from gptfit.files import PAGE, write_text_atomic
from gptfit.page import explore_data
from gptfit.page.explore_page import page
from gptfit.record import RunRecord


def held_out_prompts(run: RunRecord) -> list[list[int]]:
    """The held-out prompts the run's samples started from, in order, each once."""
    seen, out = set(), []
    for r in run.samples:
        key = tuple(r.get("prompt_ids") or ())
        if r.get("source") == "held-out" and key and key not in seen:
            seen.add(key)
            out.append(list(key))
    return out


def run_page(
    run_dir: Path, model, tokenizer, corpus, eval: EvalConfig, block_size: int, seed: int, name: str, out=None
) -> Path:
    """Write the run's page (by default <run>/explore.html); return its path. `seed` seeds the page's
    decoding, `name` is the experiment's."""
    run = RunRecord.read(run_dir)
    spelled = (encode_text(tokenizer, p) for p in eval.prompts)  # None: words data=uniform's symbols cannot spell
    prompts = [ids for ids in spelled if ids is not None] + held_out_prompts(run)
    if not prompts:
        prompts = [corpus.val[: eval.prompt_tokens].tolist()]
    attention_ids = encode_text(tokenizer, eval.attention_prompt) or corpus.val[:block_size].tolist()
    attention_ids = attention_ids[:block_size]
    data = {
        "curves": explore_data.curves(run),
        "text": explore_data.text(run, model),
        "samples": explore_data.samples(run, corpus.train, corpus.eot_id, eval.copy_span),
        "decoding": explore_data.decoding(model, prompts, corpus.eot_id, seed),
        "attention": explore_data.attention(model, attention_ids),
        "vocab": explore_data.vocabulary(tokenizer),
    }
    out = Path(out) if out else run_dir / PAGE
    write_text_atomic(out, page(data, f"gptfit run: {name}, {len(corpus.train):,} training tokens ({run_dir.name})"))
    return out


def sweep_page(sweep: Path, runs: list[RunRecord], ladders: list[dict]) -> Path:
    """The sweep's page: each finished run's curves with a link to its page, and the ladder figures
    ([{"title", "series": [[name, xs, ys]]}])."""
    entries = []
    for r in runs:
        run_dir = sweep / r.job
        if r.status == "finished":
            link = f"{r.job}/{PAGE}" if (run_dir / PAGE).exists() else None
            entries.append({"name": f"job {r.job}", "curves": explore_data.curves(r), "link": link})
    data = {"runs": entries, "ladder": ladders}
    out = sweep / PAGE
    write_text_atomic(out, page(data, f"gptfit sweep: {sweep.name}", views=("curves",)))
    return out
