"""What `python -m gptfit.sample` shows of a trained run: each setting's completion side by side, the
step-by-step trace of each, and three figures (the transforms, the greedy path, the beam-search tree)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from gptfit.core.decoding_settings import as_setting, strategy_of
from gptfit.core.sampling.decode import generate, model_context
from gptfit.errors import UserError
from gptfit.files import run_seed
from gptfit.model.loading import load_pretrained
from gptfit.plots import decoding as figures


def decode_run(options, directory: Path) -> None:
    """Decode `options.prompt` (a SampleConfig) under every setting with the model saved in `directory`."""
    settings = {name: as_setting(s, f"decoding.{name}", **_length(options)) for name, s in options.decoding.items()}
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if options.threads:
        torch.set_num_threads(options.threads)
    model, tokenizer = load_pretrained(str(directory))
    model.eval()
    eos = tokenizer.eos_token_id
    prompt = options.prompt
    ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt is not None else [eos]
    if not ids:
        raise UserError(f"prompt={prompt!r}: the tokenizer makes no token of it")
    input_ids = torch.tensor([ids])  # [1, prompt]
    seed = options.seed if options.seed is not None else run_seed(options.run)

    def label(token: int) -> str:
        return repr(tokenizer.decode([token]))[1:-1]

    results = {
        name: generate(model, input_ids, s, seed=seed, eos_token_id=eos, trace=True, trace_top=options.top)
        for name, s in settings.items()
    }
    shown = "end-of-text (unconditional)" if prompt is None else repr(prompt)
    print(f"model: {directory}  seed: {seed}  prompt: {shown} ({len(ids)} tokens)")
    for line in completion_table(results, settings, tokenizer, eos):
        print(line)
    if options.trace:
        for name, r in results.items():
            print(
                f"\n[{name}] step by step ({r.strategy}; top {options.top} candidates, probabilities after the "
                "setting's transforms)"
            )
            for line in trace_lines(r, label):
                print("  " + line)
    if options.plots:
        out = Path(options.out).expanduser() if options.out else Path(options.run).expanduser() / "samples"

        def visible(token: int) -> str:  # a space is invisible on a figure
            return label(token).replace(" ", "\u2423")

        for path in draw(model, input_ids, settings, results, visible, out, seed, eos, options.top):
            print(f"figure: {path}")


def _length(options) -> dict:
    return {} if options.max_new_tokens is None else {"max_new_tokens": options.max_new_tokens}


def completion_table(results: dict, settings: dict, tokenizer, eos: int) -> list[str]:
    """One row per completion: the setting and its strategy, then the text (beam search: with its score)."""

    def text(tokens) -> str:
        tokens = tokens.tolist()
        if eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]  # the rest is padding
        return tokenizer.decode(tokens).replace("\n", "\\n")

    width = max(len(n) for n in results) + 2 + max(len(strategy_of(s)) for s in settings.values()) + 2
    lines = [f"{'setting':<{width}} | completion", f"{'-' * width}-+-{'-' * 40}"]
    for name, r in results.items():
        tag = f"{name} ({r.strategy})"
        for i, row in enumerate(r.new_tokens):
            score = f"  [score {float(r.scores[i]):.3f}]" if r.scores is not None else ""
            lines.append(f"{tag if i == 0 else '':<{width}} | {text(row)}{score}")
    return lines


def trace_lines(result, label) -> list[str]:
    """One line per step: what was taken, then the candidates (beam search: each new beam and its parent)."""
    lines = []
    for step in result.steps:
        if step.parents is None:
            token = int(step.token_ids[0])
            cands = "  ".join(
                f"{label(int(i))!r} {float(p):.3f}" for i, p in zip(step.top_ids[0], step.top_probs[0]) if p > 0
            )
            lines.append(f"step {step.index + 1:3d}: took {label(token)!r:<14} | {cands}")
        else:
            beams = "  |  ".join(
                f"beam {j} <- {int(p)} {label(int(t))!r} ({float(s):.2f})"
                for j, (p, t, s) in enumerate(zip(step.parents[0], step.token_ids[0], step.scores[0]))
            )
            lines.append(f"step {step.index + 1:3d}: {beams}")
    return lines


def draw(model, input_ids, settings: dict, results: dict, label, out: Path, seed: int, eos: int, top: int):
    """The three figures; the transforms' values come from the settings shown, else the conf defaults."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    sampled = [s for s in settings.values() if strategy_of(s) == "sample"]
    low = min([s.temperature for s in sampled if s.temperature < 1] or [0.7])
    high = max([s.temperature for s in sampled if s.temperature > 1] or [1.3])
    top_k = next((s.top_k for s in sampled if s.top_k > 0), 6)
    top_p = next((s.top_p for s in sampled if s.top_p < 1), 0.92)
    context = model_context(model) or input_ids.shape[1]
    with torch.inference_mode():
        logits = model(input_ids=input_ids[:, -context:]).logits[0, -1]  # [vocab]
    paths.append(
        figures.transform_panels(
            logits,
            label,
            out / "next_token_transforms.png",
            (low, high),
            top_k,
            top_p,
            title="next-token distribution after the prompt",
        )
    )

    greedy = next((r for r in results.values() if r.strategy == "greedy"), None)
    if greedy is None:
        s = next(iter(settings.values()))
        greedy = generate(
            model,
            input_ids,
            as_setting(max_new_tokens=s.max_new_tokens),
            seed=seed,
            eos_token_id=eos,
            trace=True,
            trace_top=top,
        )
    paths.append(figures.greedy_path(greedy.steps, label, out / "greedy_path.png"))

    beam = next((r for r in results.values() if r.strategy in ("beam", "beam_sample")), None)
    if beam is not None:
        paths.append(figures.beam_tree(beam.steps, label, out / "beam_tree.png", best=beam.new_tokens[0]))
    return paths
