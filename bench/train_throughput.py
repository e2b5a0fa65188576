"""Training throughput: gptfit's `tiny` GPT through gptfit's training path vs. Hugging Face GPT-2 in a bare loop.

The contestants train at batch 12 x 64 tokens, dropout 0, the same AdamW settings (taken from the
optimizer the Trainer builds), gradient clipping at 1.0 and the same thread count:
  trainer  gptfit's model through gptfit's own path (GptfitTrainer + training_arguments + RandomWindows)
  bare     gptfit's model in a bare PyTorch loop
  gpt2     transformers' GPT2LMHeadModel of the same shape and vocabulary in the same bare loop
  bare_bf16, gpt2_bf16  the two bare loops with the forward under bf16 autocast (gptfit's
           train.precision=bf16); only where the CPU computes bf16 natively
They are interleaved in one process: a callback of the running Trainer, every BLOCK steps, times the
Trainer's block, then runs one block of each bare loop. tokens/s are medians over the blocks; each
ratio is the median over rounds of the two contestants' block times in that round, which cancels the
machine's drift (its speed wanders by 20% or more over minutes; the per-block step times are printed).

Prints one JSON object: tokens/s of each, the ratios, the loop overhead and the model FLOPs utilization
(fp32) against the measured fp32 matmul peak of this machine.

    python bench/train_throughput.py [--blocks 24] [--block-steps 8] [--threads N] [--no-bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from gptfit.config import Config
from gptfit.data.windows import RandomWindows
from gptfit.model import GPTConfig, GPTForCausalLM
from gptfit.run.trainer import GptfitTrainer, native_bf16, training_arguments

VOCAB, N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH = 2048, 4, 4, 128, 64, 12


def matmul_peak_flops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_token(model) -> float:
    """nanoGPT's estimate: 6 N (every weight matmul, forward and backward) + 12 L T d (attention)."""
    n = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name)
    return 6 * n + 12 * N_LAYER * BLOCK * N_EMBD


class BareLoop:
    """One model, its optimizer (configured like the Trainer's) and a fixed stream of batches."""

    def __init__(self, model, like: torch.optim.Optimizer, stream: torch.Tensor, seed: int, bf16: bool = False):
        like = getattr(like, "optimizer", like)  # the torch optimizer inside accelerate's wrapper
        self.model = model.train()
        groups = [
            {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": like.defaults["weight_decay"]},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ]
        kw = {k: like.defaults[k] for k in ("lr", "betas", "eps", "fused", "foreach") if k in like.defaults}
        self.opt = type(like)(groups, **kw)
        self.stream, self.gen = stream, torch.Generator().manual_seed(seed)
        self.bf16 = bf16  # the forward under bf16 autocast, as gptfit's train.precision=bf16

    def step(self) -> None:
        offsets = torch.randint(0, len(self.stream) - BLOCK, (BATCH,), generator=self.gen)
        x = torch.stack([self.stream[o : o + BLOCK] for o in offsets.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def block(self, steps: int) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - t


class Interleave(TrainerCallback):
    def __init__(self, block_steps: int, make_loops):
        self.block_steps, self.make_loops = block_steps, make_loops
        self.times = {"trainer": []}
        self.loops, self.mark = None, None

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step % self.block_steps:
            return
        now = time.perf_counter()
        if self.loops is None:  # the first block warms up the Trainer; build the bare loops like its optimizer
            self.loops = self.make_loops(optimizer)
            self.times.update({name: [] for name in self.loops})
            for loop in self.loops.values():
                loop.block(3)
        else:
            self.times["trainer"].append(now - self.mark)
            for name, loop in self.loops.items():
                self.times[name].append(loop.block(self.block_steps))
        self.mark = time.perf_counter()


def speedup(times: dict, a: str, b: str) -> float:
    """How much faster a ran than b: the median over rounds of b's block time / a's block time.

    Each round times one block of every contestant back to back, so pairing within a round cancels
    the machine's slow drift, which a ratio of overall medians does not."""
    return round(statistics.median(tb / ta for ta, tb in zip(times[a], times[b])), 3)


def quartiles(times: dict, a: str, b: str) -> list[float]:
    """The spread of those per-round ratios: the machine's slow spells show here."""
    q1, _, q3 = statistics.quantiles((tb / ta for ta, tb in zip(times[a], times[b])), n=4)
    return [round(q1, 3), round(q3, 3)]


def run_interleaved(args, bf16: bool, stream: torch.Tensor):
    """gptfit's Trainer on gptfit's model, with a block of every bare loop after each of its blocks.
    Returns (the Interleave callback with the block times, the trainer, its model)."""
    shape = dict(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD)

    def gptfit():
        torch.manual_seed(0)
        return GPTForCausalLM(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, dropout=0.0, **shape))

    def gpt2():
        torch.manual_seed(0)
        return GPT2LMHeadModel(
            GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **shape)
        )

    def make_loops(like):
        loops = {"bare": BareLoop(gptfit(), like, stream, 1), "gpt2": BareLoop(gpt2(), like, stream, 1)}
        if bf16:
            loops["bare_bf16"] = BareLoop(gptfit(), like, stream, 1, bf16=True)
            loops["gpt2_bf16"] = BareLoop(gpt2(), like, stream, 1, bf16=True)
        return loops

    model = gptfit()
    cfg = Config(run_dir="unused")
    cfg.train.max_steps = (args.blocks + 1) * args.block_steps
    cfg.train.batch_size, cfg.train.lr, cfg.train.warmup_steps = BATCH, 1e-3, 0
    cfg.train.save_every = cfg.train.max_steps * 10  # no checkpoint inside the timed blocks
    cfg.model.block_size = BLOCK
    interleave = Interleave(args.block_steps, make_loops)
    with tempfile.TemporaryDirectory() as tmp:
        targs = training_arguments(cfg.train, cfg.seed, Path(tmp), "cpu")
        targs.disable_tqdm = True
        targs.save_strategy = "no"
        dataset = RandomWindows(stream.numpy(), BLOCK, cfg.train.max_steps * BATCH, seed=0)
        trainer = GptfitTrainer(model=model, args=targs, train_dataset=dataset, callbacks=[interleave])
        trainer.remove_callback(PrinterCallback)  # stdout carries the JSON alone
        trainer.train()
    return interleave, trainer, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=24)
    ap.add_argument("--block-steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-bf16", action="store_true", help="leave out the bf16 pair (it runs where bf16 is native)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    bf16 = native_bf16("cpu") and not args.no_bf16
    stream = torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, 200_000))
    interleave, trainer, gptfit_model = run_interleaved(args, bf16, stream)
    times = interleave.times
    tokens_per_block = args.block_steps * BATCH * BLOCK
    tps = {k: tokens_per_block / statistics.median(v) for k, v in times.items()}
    step_ms = {k: [round(t / args.block_steps * 1e3, 1) for t in v] for k, v in times.items()}
    peak = matmul_peak_flops()
    fpt = flops_per_token(gptfit_model)
    result = {
        "benchmark": "train_throughput",
        "threads": torch.get_num_threads(),
        "batch": [BATCH, BLOCK],
        "shape": {"n_layer": N_LAYER, "n_head": N_HEAD, "n_embd": N_EMBD, "vocab": VOCAB},
        "optimizer": {
            "type": type(trainer.optimizer.optimizer).__name__,
            "fused": trainer.optimizer.optimizer.defaults.get("fused"),
            "lr": 1e-3,
            "grad_clip": 1.0,
        },
        "blocks": args.blocks,
        "steps_per_block": args.block_steps,
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "ratio_gptfit_trainer_vs_gpt2_bare": speedup(times, "trainer", "gpt2"),
        "ratio_gptfit_trainer_vs_gpt2_bare_quartiles": quartiles(times, "trainer", "gpt2"),
        "ratio_model_only_gptfit_vs_gpt2": speedup(times, "bare", "gpt2"),
        "ratio_model_only_gptfit_vs_gpt2_quartiles": quartiles(times, "bare", "gpt2"),
        "loop_overhead_trainer_vs_bare": round(speedup(times, "bare", "trainer") - 1, 4),
        # Same work in bf16 autocast (train.precision=bf16), where the CPU has native bf16. The fp32
        # ratios above are the like-for-like comparison; these say what bf16 adds on top.
        **(
            {
                "bf16_speedup_gptfit": speedup(times, "bare_bf16", "bare"),
                "ratio_model_only_gptfit_vs_gpt2_both_bf16": speedup(times, "bare_bf16", "gpt2_bf16"),
            }
            if bf16
            else {"bf16": "not run: no native bf16 on this CPU" if not native_bf16("cpu") else "not run"}
        ),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "model_flops_per_token": fpt,
        "mfu": {k: round(v * fpt / peak, 4) for k, v in tps.items() if not k.endswith("bf16")},
        "step_ms_per_block": step_ms,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
