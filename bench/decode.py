"""Decoding speed: gptfit's cached loop against transformers' `generate`, and against no cache at all.

The `tiny` shape (4 layers, 4 heads, 128 wide, vocabulary 2048) with a context of 256 decodes exactly
200 new tokens from a 1-token prompt (end-of-text suppressed on every side with min_new_tokens=200), at
batch 1 and batch 16, greedy and 3-beam search. Contestants:
  gptfit        gptfit's GPT through gptfit.core.sampling.generate (preallocated KVCache, its own loop)
  gptfit_nocache  the same loop without the cache (every step runs the whole sequence)
  hf_generate   the same gptfit GPT through transformers' `model.generate` (the loop alone differs)
  gpt2_generate transformers' GPT2LMHeadModel of the same shape and vocabulary through `generate`
They are interleaved in one process: every round runs one call of each, in a rotating order; the
medians over the rounds are compared. All produce the same tokens for greedy and for beam search
(checked before timing).

Prints one JSON object: tokens/s of each (new tokens x batch rows / s) and the ratios
  (a) gptfit vs gpt2_generate  (targets: >= 3x greedy at batch 1, > 1x for 3-beam search)
  (b) gptfit vs hf_generate    (the loop alone; target >= 1.2x)
  (c) gptfit vs gptfit_nocache

    python bench/decode.py [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from gptfit.core.sampling import generate
from gptfit.model import GPTConfig, GPTForCausalLM

VOCAB, N_LAYER, N_HEAD, N_EMBD, CONTEXT, NEW = 2048, 4, 4, 128, 256, 200
EOS = 0


def models():
    torch.manual_seed(0)
    ours = GPTForCausalLM(GPTConfig(vocab_size=VOCAB, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD,
                                    block_size=CONTEXT, eos_token_id=EOS, pad_token_id=EOS)).eval()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD,
                                      n_positions=CONTEXT, bos_token_id=EOS, eos_token_id=EOS,
                                      pad_token_id=EOS)).eval()
    return ours, gpt2


def contestants(ours, gpt2, beams: int):
    setting = dict(max_new_tokens=NEW, num_beams=beams)
    hf = dict(max_new_tokens=NEW, min_new_tokens=NEW, num_beams=beams, do_sample=False, eos_token_id=EOS,
              pad_token_id=EOS)

    def run_gptfit(ids):
        return generate(ours, ids, setting, eos_token_id=EOS, min_new_tokens=NEW).sequences

    def run_nocache(ids):
        return generate(ours, ids, setting, eos_token_id=EOS, min_new_tokens=NEW, use_cache=False).sequences

    def run_hf(ids):
        return ours.generate(ids, attention_mask=torch.ones_like(ids), **hf)

    def run_gpt2(ids):
        return gpt2.generate(ids, attention_mask=torch.ones_like(ids), **hf)

    return {"gptfit": run_gptfit, "gptfit_nocache": run_nocache, "hf_generate": run_hf, "gpt2_generate": run_gpt2}


def timed(fn, ids) -> float:
    start = time.perf_counter()
    out = fn(ids)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == 1 + NEW, out.shape
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    ours, gpt2 = models()

    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "new_tokens": NEW,
              "context": CONTEXT, "rounds": args.rounds, "tokens_per_s": {}, "ratios": {}}
    for beams in (1, 3):
        for batch in (1, 16):
            key = f"{'greedy' if beams == 1 else f'beam{beams}'}_batch{batch}"
            ids = torch.randint(1, VOCAB, (batch, 1), generator=torch.Generator().manual_seed(batch))
            runs = contestants(ours, gpt2, beams)
            # Same tokens from gptfit's loop and from generate on the same model (and without the cache).
            with torch.inference_mode():
                ref = runs["hf_generate"](ids)
            assert torch.equal(runs["gptfit"](ids), ref) and torch.equal(runs["gptfit_nocache"](ids), ref), key
            times = {name: [] for name in runs}
            names = list(runs)
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    times[name].append(timed(runs[name], ids))
            rows = batch * (beams if beams == 1 else 1)
            tps = {name: rows * NEW / statistics.median(t) for name, t in times.items()}
            result["tokens_per_s"][key] = {k: round(v, 1) for k, v in tps.items()}
            result["ratios"][key] = {
                "a_vs_gpt2_generate": round(tps["gptfit"] / tps["gpt2_generate"], 2),
                "b_vs_generate_same_model": round(tps["gptfit"] / tps["hf_generate"], 2),
                "c_vs_no_cache": round(tps["gptfit"] / tps["gptfit_nocache"], 2),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
