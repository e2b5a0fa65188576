"""torch.compile for training (train.compile): what it costs before the first step, what it saves per step,
and the number of steps after which it pays.

gptfit's `tiny` GPT at batch 12 x 64 (or --shape small: 6 x 384, context 256, batch 8) in a bare loop
with fused AdamW, eager and compiled, in one process: the compiled model's first steps (the compile)
are timed apart, then blocks of steps of the two alternate, so the machine's drift cancels in each
round's ratio. Prints one JSON object: compile_s, step_ms of each, speedup, break_even_steps.

    python bench/compile.py [--shape tiny|small] [--rounds 8] [--block 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gptfit.model import GPTConfig, GPTForCausalLM

SHAPES = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=8),
}


def trainer_step(model, optimizer, batch):
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def block(step, batch, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        step(batch)
    return (time.perf_counter() - started) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SHAPES, default="tiny")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = dict(SHAPES[args.shape])
    batch_size = shape.pop("batch")
    models, steps = {}, {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = GPTForCausalLM(GPTConfig(vocab_size=2048, dropout=0.0, bias=False, **shape)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
        run = torch.compile(model) if name == "compiled" else model
        models[name] = run
        steps[name] = lambda b, run=run, opt=optimizer: trainer_step(run, opt, b)
    batch = torch.randint(0, 2048, (batch_size, shape["block_size"]))
    block(steps["eager"], batch, 3)  # warm-up
    started = time.perf_counter()
    block(steps["compiled"], batch, 3)  # the compile happens in these (forward, backward, a recompile or two)
    first_three = time.perf_counter() - started
    ratios, times = [], {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        round_times = {name: block(steps[name], batch, args.block) for name in ("eager", "compiled")}
        for name, t in round_times.items():
            times[name].append(t)
        ratios.append(round_times["eager"] / round_times["compiled"])
    eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
    compile_s = first_three - 3 * compiled
    saved = eager - compiled
    print(
        json.dumps(
            {
                "shape": args.shape,
                "threads": args.threads,
                "compile_s": round(compile_s, 2),
                "step_ms": {"eager": round(1000 * eager, 2), "compiled": round(1000 * compiled, 2)},
                "speedup": round(statistics.median(ratios), 3),
                "break_even_steps": round(compile_s / saved) if saved > 0 else None,
            }
        )
    )


if __name__ == "__main__":
    main()
