"""Training throughput and MFU on a GPU: gptfit's GPT against transformers' GPT2LMHeadModel of the same shape.

Two shapes: `small` (conf/model/small.yaml: 6 layers, 6 heads, 384 wide, context 256, gptfit's default
vocabulary of 2048; batch 64) and GPT-2 124M's (12 layers, 12 heads, 768 wide, context 1024, vocabulary
50257; batch 16), each 16,384 tokens a step. Both models train in bf16 autocast over fp32 weights
(gptfit's train.precision=bf16), dropout 0, fused AdamW (lr 3e-4, betas 0.9/0.95, weight decay 0.1 on the
matrices), gradient clipping at 1.0, each through its own loss (gptfit: the fused output layer + loss;
GPT-2: logits, then cross-entropy); GPT-2 with transformers' default attention (SDPA). Eager, and under
torch.compile (the optimizer step stays eager).

All contestants of a shape live in one process and take turns: each round runs a block of steps of every
one, in a rotating order; tokens/s are medians over the blocks, and each ratio is the median over rounds
of the two contestants' block times in that round (bench/train_throughput.py's `speedup`).

MFU = tokens/s x FLOPs per token / the H200's measured bf16 matrix rate (790 TFLOP/s), FLOPs per token
= 6 N + 12 L T d (nanoGPT / PaLM appendix B: N the parameters without the position embeddings, the tied
output layer counted once; the attention term with T the whole context, not halved for causality).

    python bench/gpu_train.py [--shapes small,gpt2_124m] [--modes eager,compiled] [--rounds 6] [--toy]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
import yaml
from gpu_common import H200_BF16_FLOPS, ROOT, Budget, Stopped, clock, common_args, device_facts, emit, log, matmul_flops
from train_throughput import quartiles, speedup
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from gptfit.model import GPTConfig, GPTForCausalLM


def shapes() -> dict[str, dict]:
    small = yaml.safe_load(Path(ROOT / "conf/model/small.yaml").read_text())
    dims = ("n_layer", "n_head", "n_embd", "block_size")
    return {
        "small": dict({k: small[k] for k in dims}, vocab=2048, batch=64),
        "gpt2_124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab=50257, batch=16),
        "toy": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab=256, batch=4),
    }


def build(kind: str, shape: dict, device: str):
    torch.manual_seed(0)
    dims = dict(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"])
    if kind == "gptfit":
        config = GPTConfig(vocab_size=shape["vocab"], block_size=shape["block_size"], dropout=0.0, **dims)
        return GPTForCausalLM(config).to(device).train()
    config = GPT2Config(
        vocab_size=shape["vocab"],
        n_positions=shape["block_size"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        **dims,
    )
    return GPT2LMHeadModel(config).to(device).train()


def flops_per_token(model, shape: dict) -> float:
    """6 N + 12 L T d; N without the position embeddings (gptfit: wpe, GPT-2: wpe too)."""
    n = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name)  # tied weights once
    return 6 * n + 12 * shape["n_layer"] * shape["block_size"] * shape["n_embd"]


class Contestant:
    """One model, its optimizer and its step, eager or compiled."""

    def __init__(self, kind: str, compiled: bool, shape: dict, device: str, backend: str):
        self.model = build(kind, shape, device)
        self.run = torch.compile(self.model, backend=backend) if compiled else self.model
        fused = {"fused": True} if device.startswith("cuda") else {}
        matrices = [p for p in self.model.parameters() if p.dim() >= 2]
        others = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), **fused)
        self.device, self.times, self.peaks, self.loss = device, [], [], None

    def step(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16):
            loss = self.run(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def block(self, batches: list[torch.Tensor], steps: int) -> float:
        """Seconds for `steps` steps; the peak memory of those steps above what was held before them."""
        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            held = torch.cuda.memory_allocated()
        start = clock(self.device)
        for i in range(steps):
            loss = self.step(batches[i % len(batches)])
        elapsed = clock(self.device) - start
        self.loss = float(loss.detach())
        if cuda:
            self.peaks.append((torch.cuda.max_memory_allocated() - held) / 2**30)
        return elapsed


def compile_guess(args, shape: str, name: str, seen: list[float]) -> float:
    """Seconds a compile may take. One that the warm-up (--warmup-json) did is in the cache: 1.5x the longest
    compile so far here, or its cold time. Another: 1.5x the longest cold compile known, else --compile-guess-s."""
    if name in args.cold_compiles.get(shape, {}):
        return 1.5 * max(seen) if seen else args.cold_compiles[shape][name]
    cold = [t for times in args.cold_compiles.values() for t in times.values()]
    return 1.5 * max(cold or seen or [args.compile_guess_s])


def warm_up(contestants: dict, batches, budget: Budget, args, compile_s: list[float], result: dict) -> None:
    """The first steps of each (the compile, for compiled ones), timed into result["first_steps_s"] as they
    end. A contestant that fails is dropped, and so is one that would not finish in the time left (a compile
    is guessed by `compile_guess`): result["errors"] says why."""
    first, errors = result.setdefault("first_steps_s", {}), result.setdefault("errors", {})
    for name in list(contestants):
        compiled = name.endswith("compiled")
        needs = args.reserve_s + (compile_guess(args, result["shape_name"], name, compile_s) if compiled else 0)
        if budget.left() < needs:
            errors[name] = f"not run: {budget.left():.0f} s left of the time budget, {needs:.0f} s needed"
        else:
            log(f"  {name}: first {args.warm_steps} steps ...")
            try:
                first[name] = round(contestants[name].block(batches, args.warm_steps), 2)
                compile_s.extend([first[name]] if compiled else [])
            except Exception as exc:  # a compile that fails on this device: report it, measure the others
                errors[name] = f"{type(exc).__name__}: {str(exc)[:400]}"
        if name in errors:
            log(f"  {name}: {errors[name]}")
            del contestants[name]
        else:
            contestants[name].times.clear()
            contestants[name].peaks.clear()


def interleave(contestants: dict, batches, rounds: int, steps: int, budget: Budget, reserve: float) -> int:
    """Rounds of one block of every contestant, in a rotating order; at least 2 rounds, more while time lasts."""
    names = list(contestants)
    done = 0
    for r in range(rounds):
        if r >= 2 and budget.left() < reserve:
            break
        for name in names[r % len(names) :] + names[: r % len(names)]:
            contestants[name].times.append(contestants[name].block(batches, steps))
        done += 1
    return done


def figures(contestants: dict, shape: dict, steps: int, peak: float) -> dict:
    tokens = steps * shape["batch"] * shape["block_size"]
    out = {}
    for name, c in contestants.items():
        fpt = flops_per_token(c.model, shape)
        tps = tokens / statistics.median(c.times)
        out[name] = {
            "tokens_per_s": round(tps, 1),
            "mfu": round(tps * fpt / peak, 4),
            "step_ms": round(statistics.median(c.times) / steps * 1e3, 2),
            "flops_per_token": fpt,
            "params": sum(p.numel() for p in c.model.parameters()),
            "step_peak_gib": round(max(c.peaks), 2) if c.peaks else None,
            "last_loss": round(c.loss, 3),
            "block_ms": [round(t * 1e3, 1) for t in c.times],
        }
    return out


def ratios(contestants: dict) -> dict:
    """gptfit vs GPT-2 in each mode, and compiled vs eager for each model (>1: the first is faster)."""
    pairs = {f"gptfit_vs_gpt2_{m}": (f"gptfit_{m}", f"gpt2_{m}") for m in ("eager", "compiled")}
    pairs |= {f"compiled_vs_eager_{k}": (f"{k}_compiled", f"{k}_eager") for k in ("gptfit", "gpt2")}
    out = {}
    for key, (a, b) in pairs.items():
        if a in contestants and b in contestants:
            times = {a: contestants[a].times, b: contestants[b].times}
            out[key] = speedup(times, a, b)
            out[f"{key}_quartiles"] = quartiles(times, a, b) if len(times[a]) >= 2 else None
    return out


def measure_shape(name: str, args, budget: Budget, peak: float, compile_s: list[float]) -> dict:
    shape = shapes()[name]
    log(f"train: shape {name} {shape}")
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, shape["vocab"], (shape["batch"], shape["block_size"]), generator=g).to(args.device)
        for _ in range(4)
    ]
    contestants = {}
    for mode in args.modes:
        for kind in ("gptfit", "gpt2"):
            contestants[f"{kind}_{mode}"] = Contestant(kind, mode == "compiled", shape, args.device, args.backend)
    result = {"shape_name": name, "shape": shape, "tokens_per_step": shape["batch"] * shape["block_size"]}
    result["gpt2_attention"] = contestants[f"gpt2_{args.modes[0]}"].model.config._attn_implementation
    try:
        warm_up(contestants, batches, budget, args, compile_s, result)
        result["rounds"] = interleave(contestants, batches, args.rounds, args.block_steps, budget, args.reserve_s)
    except Stopped as stop:  # keep what was measured: the blocks so far
        result["stopped"] = str(stop)
    timed = {name: c for name, c in contestants.items() if c.times}
    result["contestants"] = figures(timed, shape, args.block_steps, peak)
    result["ratios"] = ratios(timed)
    return result


def cold_compiles(path: str | None) -> dict:
    """{shape: {contestant: seconds}} of the compiles that the warm-up finished (none without its output)."""
    try:
        warmup = json.loads(Path(path).read_text()) if path else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return {shape: res.get("first_steps_s") or {} for shape, res in (warmup.get("shapes") or {}).items()}


def main() -> None:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small,gpt2_124m")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--block-steps", type=int, default=10)
    ap.add_argument("--warm-steps", type=int, default=3, help="untimed first steps (the compile, when compiled)")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (the CPU toy run: aot_eager)")
    ap.add_argument("--reserve-s", type=float, default=15.0, help="start no more work with less than this left")
    ap.add_argument("--warm-only", action="store_true", help="only the compiled models' first steps (fills the cache)")
    ap.add_argument("--warmup-json", help="the warm-up's output: which compiles the cache holds, and their cold times")
    ap.add_argument("--compile-guess-s", type=float, default=40.0, help="a compile's time before one was seen")
    args = ap.parse_args()
    args.modes = args.modes.split(",")
    if args.toy:
        args.shapes, args.rounds, args.block_steps, args.warm_steps = "toy", 3, 2, 2
    if args.warm_only:  # bench/gpu.sh's warmup: torch.compile's cache then serves the timed run
        args.modes, args.rounds = ["compiled"], 0
    args.cold_compiles = cold_compiles(args.warmup_json)
    budget = Budget(args.budget_s)
    hf_logging.set_verbosity_error()
    cuda = args.device.startswith("cuda")
    measured = matmul_flops(args.device, 8192 if cuda else 512)
    peak = H200_BF16_FLOPS if cuda else measured
    result = {
        "benchmark": "gpu_train" + (" --warm-only" if args.warm_only else ""),
        "device": device_facts(args.device),
        "torch": torch.__version__,
        "precision": "bf16 autocast, fp32 weights",
        "compile_backend": args.backend,
        "bf16_matmul_tflops_measured": round(measured / 1e12, 3),
        "mfu_against_tflops": round(peak / 1e12, 3),
        "flops_per_token": "6 N + 12 L T d (N: parameters without position embeddings; T: the context)",
        "steps_per_block": args.block_steps,
        "shapes": {},
    }
    compile_s: list[float] = []  # the compiles so far, to guess whether another fits in the time left
    for name in args.shapes.split(","):
        if "stopped" in result:
            result["shapes"][name] = {"stopped": "not run: " + result["stopped"]}
            continue
        try:
            result["shapes"][name] = shape_result = measure_shape(name, args, budget, peak, compile_s)
        except Stopped as stop:
            shape_result = result["shapes"][name] = {"stopped": str(stop)}
        if "stopped" in shape_result:
            result["stopped"] = shape_result["stopped"]
            log(f"train: stopped early ({result['stopped']})")
        if cuda:
            torch.cuda.empty_cache()
    emit(result)


if __name__ == "__main__":
    main()
