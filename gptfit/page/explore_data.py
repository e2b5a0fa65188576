"""What the explorer page shows of a run, gathered at export into one JSON-able dict (one key per view).

- curves: every metrics.jsonl row's losses, gap and rates, and the best validation step;
- text: the last evaluation's ordinary sequences of the per-sequence table, re-scored by the saved model
  for each token's loss, rank and top 5 predictions;
- samples: samples.jsonl, with the verbatim copies of the training text and where they come from;
- decoding: for a few prompts, the full next-token logits along the greedy path (float16, base64), so
  that the page applies the transforms itself, and the beam-search trees for 2, 3 and 4 beams;
- attention: the maps of the attention prompt.
Token ids are sent once as a vocabulary of their decoded strings.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pyarrow.compute as pc
import torch

from gptfit import keys
from gptfit.core.attention import attention_maps
from gptfit.core.decoding_settings import as_setting
from gptfit.core.eval_mode import eval_mode
from gptfit.core.sampling.decode import generate, model_context
from gptfit.data.windows import document_index
from gptfit.metrics.ngrams import NgramIndex
from gptfit.record import RunRecord

CURVE_KEYS = (
    keys.TRAIN_LOSS,
    keys.VAL_LOSS,
    keys.GAP,
    keys.EXTRACTION_TRAIN,
    "mem/extraction_rate_val",
    "mem/exact_match_train",
    "mem/exact_match_val",
    "mia/loss/auc",
    "mia/min_k_plus_plus/auc",
    "mia/blind/auc",
)
TEXT_PER_SIDE = 64  # sequences of each side shown in the text view
PLAYGROUND_PROMPTS, PLAYGROUND_STEPS, BEAMS = 3, 24, (2, 3, 4)
# Logits the playground stores at most (float16: 2 bytes each, 4/3 more in base64): 3 prompts of a
# 2,048-token vocabulary, 1 of GPT-2's 50,257.
LOGIT_BUDGET = 3 * PLAYGROUND_STEPS * 2048
CONTEXT = 40  # training tokens shown on each side of a copied span


def curves(run: RunRecord) -> dict:
    rows = run.rows
    kept = [{k: r[k] for k in ("step", "tokens_seen", *CURVE_KEYS) if isinstance(r.get(k), (int, float))} for r in rows]
    with_val = [r for r in kept if keys.VAL_LOSS in r]
    best = min(with_val, key=lambda r: r[keys.VAL_LOSS])["step"] if with_val else None
    return {"rows": kept, "best_step": best}


def _round(values, digits: int = 3) -> list:
    """`values` (any shape) rounded for the page, as nested lists; None where not finite."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    rounded = np.round(np.asarray(values, dtype=np.float64), digits)
    return np.where(np.isfinite(rounded), rounded, None).tolist()


@torch.no_grad()
def text(run: RunRecord, model) -> dict:
    """The table's ordinary sequences at its last step, each token with its loss, rank and top 5."""
    last = run.last_table()
    if last is None:
        return {"sequences": []}
    last = last.filter(pc.equal(last["kind"], "sample"))
    rows = [
        r for split in ("train", "val") for r in last.filter(pc.equal(last["split"], split)).to_pylist()[:TEXT_PER_SIDE]
    ]
    if not rows:
        return {"sequences": []}
    ids = torch.tensor([r["tokens"] for r in rows])  # [n, L]
    device = next(model.parameters()).device
    parts = []
    with eval_mode(model):
        for batch in ids.split(16):  # 16 at a time: a large vocabulary's log-probabilities are large
            log_p = model(input_ids=batch[:, :-1].to(device)).logits.float().log_softmax(-1).cpu()  # [b, L - 1, vocab]
            truth = log_p.gather(-1, batch[:, 1:, None])[..., 0]  # [b, L - 1]
            ranks = (log_p > truth[..., None]).sum(-1)  # [b, L - 1]: 0 = the most probable token
            parts.append((truth, ranks, *log_p.exp().topk(5, dim=-1)))  # top 5: [b, L - 1, 5]
    truth, ranks, top_p, top_ids = (torch.cat(column) for column in zip(*parts))
    out = []
    for i, r in enumerate(rows):
        out.append(
            {
                "split": r["split"],
                "id": r["sequence_id"],
                "tokens": r["tokens"],
                "losses": _round(-truth[i]),
                "ranks": ranks[i].tolist(),
                "top_ids": top_ids[i].tolist(),
                "top_p": _round(top_p[i]),
                "loss": round(r["loss"], 3),
                "extracted": bool(r["extracted"]),
                "exposures": round(float(r["token_exposures"]), 2),
            }
        )
    return {"sequences": out}


def samples(run: RunRecord, train: np.ndarray, eot_id: int, copy_span: int) -> dict:
    """Every sample with its copied spans: where in the training text each comes from, in its context."""
    rows = [dict(r) for r in run.samples if r.get("completion_ids") is not None]
    if not rows:
        return {"steps": [], "samples": [], "sources": []}
    index = NgramIndex(train, copy_span=copy_span)
    documents = document_index(train, eot_id)
    sources: dict[int, int] = {}  # training position -> index into `found`
    found = []
    for r in rows:
        r["copies"] = []
        for start, end, pos in index.copied_spans(np.asarray(r["completion_ids"])):
            if pos >= 0 and pos not in sources:
                lo, hi = max(0, pos - CONTEXT), min(len(train), pos + (end - start) + CONTEXT)
                sources[pos] = len(found)
                found.append(
                    {
                        "document": int(documents[pos]),
                        "position": pos,
                        "before": train[lo:pos].tolist(),
                        "span": train[pos : pos + end - start].tolist(),
                        "after": train[pos + end - start : hi].tolist(),
                    }
                )
            r["copies"].append([start, end, sources.get(pos, -1)])
    keep = ("step", "decoding", "params", "source", "prompt_ids", "completion_ids", "copies", "longest_copy_tokens")
    return {
        "steps": sorted({r["step"] for r in rows}),
        "samples": [{k: r[k] for k in keep} for r in rows],
        "sources": found,
    }


def _float16_base64(logits: torch.Tensor) -> str:
    return base64.b64encode(logits.to(torch.float16).numpy().tobytes()).decode("ascii")


def decoding(model, prompts: list[list[int]], eot_id: int, seed: int) -> dict:
    """For each prompt: the greedy path with the full logits at each step, and the beam trees."""
    out = []
    vocab = model.config.vocab_size
    device = next(model.parameters()).device  # a run on a GPU writes its page from the model where it is
    context = model_context(model)
    for prompt in prompts[: max(1, min(PLAYGROUND_PROMPTS, LOGIT_BUDGET // (PLAYGROUND_STEPS * vocab)))]:
        ids = torch.tensor([prompt], device=device)
        # The greedy path's logits come from one forward over it, which must fit the model's window (a
        # data=uniform model's may be a sequence and its end-of-text: 17 tokens).
        steps = PLAYGROUND_STEPS if context is None else max(1, min(PLAYGROUND_STEPS, context - len(prompt)))
        greedy = generate(model, ids, as_setting(do_sample=False, max_new_tokens=steps), eos_token_id=[], seed=seed)
        path = greedy.sequences[0].tolist()  # prompt + greedy tokens
        with torch.no_grad(), eval_mode(model):
            path_ids = torch.tensor([path[:-1]], device=device)
            logits = model(input_ids=path_ids).logits[0, len(prompt) - 1 :].float().cpu()  # [steps, vocab]
        trees = {}
        for k in BEAMS:
            beam = generate(
                model,
                ids,
                as_setting(do_sample=False, num_beams=k, max_new_tokens=max(1, steps // 2)),
                eos_token_id=[],
                seed=seed,
                trace=True,
                trace_top=k,
            )
            trees[k] = {
                "best": beam.new_tokens[0].tolist(),
                "steps": [
                    {
                        "tokens": s.token_ids[0].tolist(),
                        "parents": s.parents[0].tolist(),
                        "scores": _round(s.scores[0]),
                        "top_ids": s.top_ids.tolist(),
                        "top_p": _round(s.top_probs),
                    }
                    for s in beam.steps
                ],
            }
        out.append({"prompt": prompt, "greedy": path[len(prompt) :], "logits": _float16_base64(logits), "beams": trees})
    return {"prompts": out}


def attention(model, ids: list[int]) -> dict:
    if not ids:
        return {"tokens": [], "maps": []}
    maps = attention_maps(model, torch.tensor(ids))  # [layer, head, query, key]
    return {"tokens": ids, "maps": np.round(maps.numpy(), 3).tolist()}


def vocabulary(tokenizer) -> list[str]:
    """The decoded text of every token id (the page shows tokens by id)."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def to_json(data: dict) -> str:
    """Compact JSON that is safe inside a <script> element."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
