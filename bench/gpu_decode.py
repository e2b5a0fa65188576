"""Greedy decoding speed on a GPU: gptfit's cached loop against transformers' `generate`.

At bench/gpu_train.py's shapes (`small`, GPT-2 124M's), with fp32 weights (gptfit decodes in its weights'
dtype, and its evaluations run in fp32), a 1-token prompt and exactly NEW new tokens (end-of-text held off
everywhere with min_new_tokens), at batch 1 and 64. The contestants are bench/decode.py's:
  gptfit         gptfit's GPT through gptfit.core.sampling.generate (its own loop over a preallocated KVCache)
  hf_generate    the same model through transformers' `model.generate` (only the loop differs)
  gpt2_generate  transformers' GPT2LMHeadModel of the same shape through `generate` (SDPA attention)
They take turns in one process: each round runs one call of each, in a rotating order; tokens/s = batch x
NEW / the median call. Before timing, gptfit's tokens are compared with generate's on the same model
(`same_tokens_as_generate`: reported, not asserted, since a GPU may round the two paths differently).

    python bench/gpu_decode.py [--shapes small,gpt2_124m] [--batches 1,64] [--new 200] [--rounds 3] [--toy]
"""

from __future__ import annotations

import statistics

import torch
from gpu_common import Budget, Stopped, clock, common_args, device_facts, emit, log
from gpu_train import shapes
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from gptfit.core.sampling.decode import generate
from gptfit.model import GPTConfig, GPTForCausalLM

EOS = 0


def models(shape: dict, device: str):
    dims = dict(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"])
    special = dict(eos_token_id=EOS, pad_token_id=EOS)
    torch.manual_seed(0)
    ours = GPTForCausalLM(GPTConfig(vocab_size=shape["vocab"], block_size=shape["block_size"], **dims, **special))
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=shape["vocab"], n_positions=shape["block_size"], bos_token_id=EOS, **dims, **special)
    )
    return ours.to(device).eval(), gpt2.to(device).eval()


def contestants(ours, gpt2, new: int) -> dict:
    hf = dict(max_new_tokens=new, min_new_tokens=new, num_beams=1, do_sample=False, eos_token_id=EOS, pad_token_id=EOS)
    return {
        "gptfit": lambda ids: generate(ours, ids, dict(max_new_tokens=new), eos_token_id=EOS, min_new_tokens=new),
        "hf_generate": lambda ids: ours.generate(ids, attention_mask=torch.ones_like(ids), **hf),
        "gpt2_generate": lambda ids: gpt2.generate(ids, attention_mask=torch.ones_like(ids), **hf),
    }


def tokens_of(out) -> torch.Tensor:
    return out.sequences if hasattr(out, "sequences") else out


def timed(fn, ids, device: str, new: int) -> float:
    start = clock(device)
    out = tokens_of(fn(ids))
    elapsed = clock(device) - start
    assert out.shape == (ids.shape[0], ids.shape[1] + new), out.shape
    return elapsed


def measure_batch(runs: dict, batch: int, args, shape: dict, budget: Budget) -> dict:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(1, shape["vocab"], (batch, 1), generator=g).to(args.device)
    warm = {name: tokens_of(fn(ids)) for name, fn in runs.items()}  # one warm-up call of each, not timed
    same = torch.equal(warm["gptfit"], warm["hf_generate"])
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.rounds):
        if r >= 1 and budget.left() < args.reserve_s:
            break
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(runs[name], ids, args.device, args.new))
    tps = {name: batch * args.new / statistics.median(t) for name, t in times.items()}
    return {
        "same_tokens_as_generate": same,
        "rounds": len(times["gptfit"]),
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "ms_per_step": {k: round(statistics.median(t) / args.new * 1e3, 3) for k, t in times.items()},
        "ratio_vs_gpt2_generate": round(tps["gptfit"] / tps["gpt2_generate"], 2),
        "ratio_vs_generate_same_model": round(tps["gptfit"] / tps["hf_generate"], 2),
        "call_ms": {k: [round(x * 1e3, 1) for x in t] for k, t in times.items()},
    }


def main() -> None:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small,gpt2_124m")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--new", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reserve-s", type=float, default=10.0, help="start no more rounds with less than this left")
    args = ap.parse_args()
    if args.toy:
        args.shapes, args.batches, args.new, args.rounds = "toy", "1,4", 16, 2
    budget = Budget(args.budget_s)
    hf_logging.set_verbosity_error()
    result = {
        "benchmark": "gpu_decode",
        "device": device_facts(args.device),
        "torch": torch.__version__,
        "dtype": "fp32",
        "prompt_tokens": 1,
        "new_tokens": args.new,
        "shapes": {},
    }
    try:
        for name in args.shapes.split(","):
            shape = shapes()[name]
            ours, gpt2 = models(shape, args.device)
            runs = contestants(ours, gpt2, args.new)
            result["shapes"][name] = {"shape": shape}
            for batch in map(int, args.batches.split(",")):
                budget.check(args.reserve_s)
                log(f"decode: {name} batch {batch}")
                result["shapes"][name][f"greedy_batch{batch}"] = measure_batch(runs, batch, args, shape, budget)
    except Stopped as stop:
        result["stopped"] = str(stop)
        log(f"decode: stopped early ({stop})")
    emit(result)


if __name__ == "__main__":
    main()
