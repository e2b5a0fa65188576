"""`python -m gptfit.sample run=<run dir> decoding=all prompt="..." trace=true`: decode a trained run.

Arguments are key=value pairs (Hydra's style, without Hydra: a run is read, not made):
  run=DIR             a run directory (its final/ model, or best/ with model=best) or a saved model directory
  decoding=all        settings from conf/decoding: a file name (all, greedy, beam, top_p, ...) or several,
                      comma-separated
  prompt="..."        the text to continue; left out: decode from end-of-text (unconditional samples)
  max_new_tokens=N    for every setting; <setting>.<key>=value changes one (e.g. beam.num_beams=5)
  trace=true          print each step's candidates (and the beams of beam search)
  seed=N              sampling seed (default: the run's seed)
  out=DIR             where the figures go (default <run>/samples); plots=false draws none
  model=final|best    which saved model of the run
  threads=N           torch CPU threads (0: torch's default)

Prints each setting's completion side by side and draws: the next-token distribution under the
transforms (temperature below and above 1, top-k, top-p), the greedy path and the beam-search tree.
A mistake in the arguments is one `error:` line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from gptfit.cli import fail
from gptfit.errors import UserError

DECODING_DIR = Path(__file__).resolve().parents[1] / "conf" / "decoding"
OPTIONS = {"run": None, "decoding": "all", "prompt": None, "max_new_tokens": None, "trace": "false", "seed": None,
           "out": None, "plots": "true", "model": "final", "top": "5", "threads": "0"}


def parse_args(argv: list[str]) -> tuple[dict, dict[str, dict[str, Any]]]:
    """(options, per-setting overrides) from key=value arguments."""
    options, overrides = dict(OPTIONS), {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"{arg!r}: arguments are key=value (see --help)")
        if "." in key:
            name, _, field = key.partition(".")
            overrides.setdefault(name, {})[field] = _scalar(value)
        elif key in OPTIONS:
            options[key] = value
        else:
            raise UserError(f"{key}: unknown option; known: {', '.join(OPTIONS)}, or <setting>.<key>=value")
    if not options["run"]:
        raise UserError("run=<run dir> is required: the run (or saved model) to decode")
    for key in ("trace", "plots"):
        options[key] = _flag(key, options[key])
    for key, low in (("max_new_tokens", 1), ("seed", 0), ("top", 1), ("threads", 0)):
        if options[key] is not None:
            options[key] = _int(key, options[key], low)
    if options["model"] not in ("final", "best"):
        raise UserError(f"model={options['model']!r}: one of final, best")
    if options["prompt"] == "":
        raise UserError("prompt is empty: give some text, or leave prompt= out to decode from end-of-text")
    return options, overrides


def _scalar(text: str) -> Any:
    """A command-line value as YAML would read it: true/false, an int, a float, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _flag(key: str, text: str) -> bool:
    value = _scalar(text)
    if not isinstance(value, bool):
        raise UserError(f"{key}={text!r}: true or false")
    return value


def _int(key: str, text: str, low: int) -> int:
    value = _scalar(text)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserError(f"{key}={text!r}: must be an integer >= {low}")
    return value


def load_decoding(names: str) -> dict[str, dict]:
    """The named settings of conf/decoding/<name>.yaml files (following their defaults lists)."""
    from omegaconf import OmegaConf

    available = sorted(p.stem for p in DECODING_DIR.glob("*.yaml"))
    settings: dict[str, dict] = {}

    def read(name: str) -> None:
        path = DECODING_DIR / f"{name}.yaml"
        if not path.exists():
            raise UserError(f"decoding={name!r}: no such decoding; available: {', '.join(available)}")
        node = OmegaConf.to_container(OmegaConf.load(path))
        for entry in node.pop("defaults", None) or []:
            if entry != "_self_":
                read(entry)
        settings.update(node)

    for name in names.split(","):
        read(name.strip())
    if not settings:
        raise UserError(f"decoding={names!r}: holds no setting; choose one of {', '.join(available)}")
    return settings


def model_dir(run: str, which: str) -> Path:
    path = Path(run).expanduser()
    if not path.is_dir():
        raise UserError(f"run={run!r}: no such run directory")
    if (path / "config.json").exists():
        return path  # a saved model directory itself
    if not (path / which / "config.json").exists():
        other = "best" if which == "final" else "final"
        raise UserError(f"run={run!r}: no saved model in {which}/ (did the run finish?); try model={other}")
    return path / which


def run_seed(run: str) -> int:
    """The run's own `seed` (it also seeds sampling), else 0."""
    from omegaconf import OmegaConf

    path = Path(run).expanduser() / ".hydra" / "config.yaml"
    if path.exists():
        seed = OmegaConf.load(path).get("seed")
        if isinstance(seed, int):
            return seed
    return 0


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    try:
        options, overrides = parse_args(argv)
        directory = model_dir(options["run"], options["model"])
        raw = load_decoding(options["decoding"])
        for name in overrides:
            if name not in raw:
                raise UserError(f"{name}.{next(iter(overrides[name]))}: no setting {name!r} in "
                                f"decoding={options['decoding']}; settings: {', '.join(raw)}")
        _sample(options, overrides, directory, raw)
    except UserError as e:
        fail([str(e)])


def _sample(options: dict, overrides: dict, directory: Path, raw: dict) -> None:
    from gptfit.core.sampling import as_setting, strategy_of

    settings = {}
    for name, values in raw.items():
        values = {**values, **overrides.get(name, {})}
        if options["max_new_tokens"] is not None:
            values["max_new_tokens"] = options["max_new_tokens"]
        settings[name] = as_setting(values, f"decoding.{name}")

    import torch
    from transformers.utils import logging as hf_logging

    from gptfit.core.sampling import generate
    from gptfit.model.loading import load_pretrained

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if options["threads"]:
        torch.set_num_threads(options["threads"])
    model, tokenizer = load_pretrained(str(directory))
    model.eval()
    eos = tokenizer.eos_token_id
    prompt = options["prompt"]
    ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt is not None else [eos]
    if not ids:
        raise UserError(f"prompt={prompt!r}: the tokenizer makes no token of it")
    input_ids = torch.tensor([ids])
    seed = options["seed"] if options["seed"] is not None else run_seed(options["run"])
    top = options["top"]

    def label(token: int) -> str:
        return repr(tokenizer.decode([token]))[1:-1]

    def text(tokens) -> str:
        tokens = tokens.tolist()
        if eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]  # the rest is padding
        return tokenizer.decode(tokens).replace("\n", "\\n")

    results = {name: generate(model, input_ids, s, seed=seed, eos_token_id=eos, trace=True, trace_top=top)
               for name, s in settings.items()}

    shown = "end-of-text (unconditional)" if prompt is None else repr(prompt)
    print(f"model: {directory}  seed: {seed}  prompt: {shown} ({len(ids)} tokens)")
    width = max(len(n) for n in results) + 2 + max(len(strategy_of(s)) for s in settings.values()) + 2
    print(f"{'setting':<{width}} | completion")
    print(f"{'-' * width}-+-{'-' * 40}")
    for name, r in results.items():
        tag = f"{name} ({r.strategy})"
        for i, row in enumerate(r.new_tokens):
            score = f"  [score {float(r.scores[i]):.3f}]" if r.scores is not None else ""
            print(f"{tag if i == 0 else '':<{width}} | {text(row)}{score}")

    if options["trace"]:
        for name, r in results.items():
            print(f"\n[{name}] step by step ({r.strategy}; top {top} candidates, probabilities after the "
                  "setting's transforms)")
            for line in trace_lines(r, label):
                print("  " + line)

    if options["plots"]:
        out = Path(options["out"]).expanduser() if options["out"] else Path(options["run"]).expanduser() / "samples"
        def visible(token: int) -> str:  # a space is invisible on a figure
            return label(token).replace(" ", "\u2423")

        for path in draw(model, input_ids, settings, results, visible, out, seed, eos, top):
            print(f"figure: {path}")


def trace_lines(result, label) -> list[str]:
    """One line per step: what was taken, then the candidates (beam search: each new beam and its parent)."""
    lines = []
    for step in result.steps:
        if step.parents is None:
            token = int(step.token_ids[0])
            cands = "  ".join(f"{label(int(i))!r} {float(p):.3f}"
                              for i, p in zip(step.top_ids[0], step.top_probs[0]) if p > 0)
            lines.append(f"step {step.index + 1:3d}: took {label(token)!r:<14} | {cands}")
        else:
            beams = "  |  ".join(
                f"beam {j} <- {int(p)} {label(int(t))!r} ({float(s):.2f})"
                for j, (p, t, s) in enumerate(zip(step.parents[0], step.token_ids[0], step.scores[0])))
            lines.append(f"step {step.index + 1:3d}: {beams}")
    return lines


def draw(model, input_ids, settings: dict, results: dict, label, out: Path, seed: int, eos: int, top: int):
    """The three figures; the transforms' values come from the settings shown, else the conf defaults."""
    import torch

    from gptfit.plots import decoding as sampling_plots
    from gptfit.core.sampling import as_setting, generate, strategy_of

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    sampled = [s for s in settings.values() if strategy_of(s) == "sample"]
    low = min([s.temperature for s in sampled if s.temperature < 1] or [0.7])
    high = max([s.temperature for s in sampled if s.temperature > 1] or [1.3])
    top_k = next((s.top_k for s in sampled if s.top_k > 0), 6)
    top_p = next((s.top_p for s in sampled if s.top_p < 1), 0.92)
    with torch.inference_mode():
        logits = model(input_ids=input_ids[:, -_context(model):]).logits[0, -1]
    paths.append(sampling_plots.transform_panels(logits, label, out / "next_token_transforms.png", (low, high),
                                                 top_k, top_p, title="next-token distribution after the prompt"))

    greedy = next((r for r in results.values() if r.strategy == "greedy"), None)
    if greedy is None:
        s = next(iter(settings.values()))
        greedy = generate(model, input_ids, as_setting(max_new_tokens=s.max_new_tokens), seed=seed, eos_token_id=eos,
                          trace=True, trace_top=top)
    paths.append(sampling_plots.greedy_path(greedy.steps, label, out / "greedy_path.png"))

    beam = next((r for r in results.values() if r.strategy in ("beam", "beam_sample")), None)
    if beam is not None:
        paths.append(sampling_plots.beam_tree(beam.steps, label, out / "beam_tree.png", best=beam.new_tokens[0]))
    return paths


def _context(model) -> int:
    from gptfit.model.loading import model_context

    return model_context(model) or 10**9


if __name__ == "__main__":
    main()
