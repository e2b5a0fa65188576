"""Memorization per sequence: the table behind every `mem/` key.

A sequence is a window of L = eval.prefix_tokens + eval.suffix_tokens tokens at an offset that is a
multiple of L, in the training set or in the held-out text, so sequences never overlap (on data=uniform,
the uniform sequences themselves, L their length). The table
scores `eval.sequences` of them a side, the same number of training and held-out ones (as many as both
sides have when fewer), evenly spread over each stream. For each, at each memorization evaluation:
- `loss`: the mean next-token loss over its L - 1 predictions; `exact_match`: the share of them whose
  argmax is the true token (Tirumala et al. 2022);
- `suffix_match`: the share of the suffix_tokens greedy tokens after its prefix_tokens prefix that
  match (Pythia's score; Carlini et al. 2022); `extracted`: that share is 1;
- `extraction/<setting>` for every decoding setting of the run, on training sequences (null on held-out
  ones, whose baseline is `extracted`): for greedy and beam search, 1 when the decoded suffix is exact;
  for sampling, the probability that one sampled completion is the suffix: the product over the suffix
  of each true token's probability under the setting's transformed distribution, teacher-forced, zero
  where a transform cuts it (Hayes et al. 2024). It is computed exactly, not sampled;
- `mia_<score>`: every membership-inference score (gptfit.metrics.membership), from the same forward pass
  as `loss`;
- `mem_bits`: memorized bits (Morris et al. 2025, gptfit.metrics.bits), from the same forward pass as
  `loss`, against the exact distribution on data=uniform, eval.mia.reference on text (null without one);
- `candidate`: with data.subset, the sequence's index among the candidates (-1: not a candidate).
- `goldfish_dropped`: with train.goldfish, the share of its suffix tokens that goldfish loss leaves out of
  the loss (on held-out text: what it would leave out), fixed for the run (gptfit.data.goldfish).
The aggregates (`aggregates`) are means over the table's `kind == "sample"` rows, and the `mia/` keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from gptfit.core.decoding_settings import as_setting, strategy_of
from gptfit.core.sampling.decode import generate
from gptfit.core.sampling.transforms import transform
from gptfit.data.exposure import sequence_exposures
from gptfit.data.uniform import UniformSet
from gptfit.data.windows import document_index
from gptfit.keys import MIA_AUC
from gptfit.metrics import bits, membership
from gptfit.metrics.population import Compared, Population, conditioned_log_probs, target_p
from gptfit.metrics.scoring import score_sequences


@dataclass
class Sequences:
    """The table's sequences of one side."""

    split: str  # train | val | aside (held-aside text, never trained on)
    offsets: np.ndarray  # [n] where each starts in its stream (-1: in none)
    doc_ids: np.ndarray  # [n] the document of its first token (-1: its own, outside the streams)
    tokens: torch.Tensor  # [n, L]
    kind: str = "sample"  # sample | duplicate
    copies: np.ndarray | None = None  # [n] how many times each was planted (None: 0)
    positions: list[list[int]] | None = None  # duplicates: where each copy starts in the training stream
    candidates: np.ndarray | None = None  # data.subset: [n] each one's index among the candidates
    # Fixed for the run, by `prepare_membership`: the decoded texts (for zlib), the blind classifier's
    # out-of-fold scores and the reference model's token log-probabilities ([n, L - 1]).
    texts: list[str] | None = None
    blind: np.ndarray | None = None
    reference_log_probs: np.ndarray | None = None
    # [n] log2 p of each one's predicted tokens under the reference of mem_bits (None: none).
    reference_log2: np.ndarray | None = None


def prepare_membership(sides: list[Sequences], tokenizer, reference, batch_size: int, seed: int) -> None:
    """Fill in what the membership scores need of each side that does not change with the model: the text
    of each sequence (special tokens kept), the blind baseline over the ordinary sequences of both sides,
    and a reference model's log-probabilities (`reference`: a model, or None)."""
    for side in sides:
        side.texts = tokenizer.batch_decode(side.tokens.tolist(), skip_special_tokens=False)
        if reference is not None:
            side.reference_log_probs = -score_sequences(reference, side.tokens, batch_size).losses.numpy()
            if side.reference_log2 is None:  # data=uniform's exact reference stays
                side.reference_log2 = side.reference_log_probs.sum(1) / math.log(2)
    ordinary = [side for side in sides if side.kind == "sample"]
    if len({side.split for side in ordinary}) < 2:
        return
    rows = pa.table(
        {
            "split": [side.split for side in ordinary for _ in side.offsets],
            "doc_id": np.concatenate([side.doc_ids for side in ordinary]),
            "candidate": np.concatenate([_candidates(side) for side in ordinary]),
        }
    )
    members = np.concatenate([np.full(len(side.offsets), side.split == "train") for side in ordinary])
    tokens = np.concatenate([side.tokens.numpy() for side in ordinary])
    scores = membership.blind(tokens, members, membership.document_groups(rows), seed)
    if scores is not None:
        bounds = np.cumsum([0, *(len(side.offsets) for side in ordinary)])
        for side, start, end in zip(ordinary, bounds[:-1], bounds[1:]):
            side.blind = scores[start:end]


def _candidates(side: Sequences) -> np.ndarray:
    return side.candidates if side.candidates is not None else np.full(len(side.offsets), -1, np.int64)


def duplicate_sides(train: np.ndarray, eot_id: int, planted: list, aside: np.ndarray) -> list[Sequences]:
    """The planted sequences of the duplication ladder, and the held-aside ones never planted (count 0)."""
    n0 = len(aside)
    return [
        planted_side(train, eot_id, planted, "duplicate"),
        Sequences(
            "aside", np.full(n0, -1), np.full(n0, -1), torch.from_numpy(aside), "duplicate", np.zeros(n0, np.int64)
        ),
    ]


def pick(
    stream: np.ndarray, eot_id: int, length: int, count: int, split: str, planted: np.ndarray | None = None
) -> Sequences:
    """`count` of the non-overlapping sequences of `length` tokens of `stream`, evenly spread; none that
    touches a token marked in `planted` ([tokens] bool: planted text is not ordinary text)."""
    starts = np.arange(len(stream) // length) * length
    if planted is not None:
        touched = np.add.reduceat(planted.astype(np.int64), starts) if len(starts) else starts
        starts = starts[touched == 0]
    available = len(starts)
    chosen = np.unique(np.linspace(0, available - 1, num=min(count, available)).round().astype(np.int64))
    offsets = starts[chosen] if available else starts
    documents = document_index(stream, eot_id)
    index = offsets[:, None] + np.arange(length)[None, :]  # [n, L]
    tokens = torch.from_numpy(np.asarray(stream, dtype=np.int64)[index])
    return Sequences(split, offsets, documents[offsets], tokens)


def both_sides(
    train: np.ndarray,
    val: np.ndarray,
    eot_id: int,
    length: int,
    count: int,
    planted: np.ndarray | None = None,
    heldout: int | None = None,
) -> list[Sequences]:
    """The same number of training and held-out sequences (`planted`: the training tokens to avoid), or up to
    `count` training and up to `heldout` held-out ones, each side as many as its stream holds."""
    train_side = pick(train, eot_id, length, count, "train", planted)
    if heldout is not None:
        return [train_side, pick(val, eot_id, length, heldout, "val")]
    val_side = pick(val, eot_id, length, min(count, len(train_side.offsets)), "val")
    if len(val_side.offsets) < len(train_side.offsets):
        train_side = pick(train, eot_id, length, len(val_side.offsets), "train", planted)
    return [train_side, val_side]


def uniform_sides(uniform: UniformSet, count: int) -> list[Sequences]:
    """data=uniform: `count` of the training sequences, evenly spread, and as many held-out ones (all of both
    when fewer), each a document of its own, scored against the exact distribution."""
    n = len(uniform.train)
    chosen = np.unique(np.linspace(0, n - 1, num=min(count, n)).round().astype(np.int64))
    offsets = uniform.offsets()[chosen]
    exact = np.full(len(chosen), uniform.reference_log2())
    return [
        Sequences(split, offsets, chosen, torch.from_numpy(tokens[chosen]), reference_log2=exact)
        for split, tokens in (("train", uniform.train), ("val", uniform.val))
    ]


def subset_sides(subset) -> list[Sequences]:
    """data.subset: every candidate, the members as training sequences (at their place in the training
    stream) and the others as held-out ones (in no stream)."""
    index = np.arange(len(subset.tokens))
    return [
        Sequences(
            split,
            subset.positions[chosen],
            subset.documents[chosen],
            torch.from_numpy(subset.tokens[chosen]),
            candidates=index[chosen],
        )
        for split, chosen in (("train", subset.members), ("val", ~subset.members))
    ]


def planted_side(train: np.ndarray, eot_id: int, groups: list, kind: str) -> Sequences:
    """The planted sequences of `groups` (gptfit.data.duplicates.Planted), each row at its first copy (-1, in
    no document, where data.dedup left no copy whole)."""
    documents = document_index(train, eot_id)
    firsts = np.array([p[0] if p else -1 for group in groups for p in group.positions], dtype=np.int64)
    tokens = torch.from_numpy(np.concatenate([group.tokens for group in groups]))
    copies = np.concatenate([np.full(len(group.tokens), group.copies) for group in groups])
    positions = [p for group in groups for p in group.positions]
    doc_ids = np.where(firsts >= 0, documents[firsts], -1)
    return Sequences("train", firsts, doc_ids, tokens, kind, copies, positions)


def decoded_matches(model, tokens: torch.Tensor, prefix: int, setting, batch_size: int, seed: int) -> torch.Tensor:
    """[n, suffix] whether each decoded token equals the true suffix token."""
    options = as_setting(setting, max_new_tokens=tokens.shape[1] - prefix, num_return_sequences=1)
    out = []
    for batch in tokens.split(batch_size):
        # eos_token_id=[]: decode every suffix token; the true suffix may hold end-of-text too.
        new = generate(model, batch[:, :prefix], options, eos_token_id=[], seed=seed).new_tokens.cpu()
        out.append(new == batch[:, prefix:])
    return torch.cat(out)


def greedy_matches(
    model, tokens: torch.Tensor, prefix: int, hits: torch.Tensor, batch_size: int, seed: int
) -> torch.Tensor:
    """[n, suffix] whether each greedy token after the prefix equals the true suffix token. `hits`: [n, L - 1]
    the table's teacher-forced argmax hits. A row whose every suffix token is its argmax under teacher
    forcing is what greedy decoding reproduces (by induction over the suffix: each decoded token is then
    the true one, so the next prediction sees the true prefix), so only the other rows are decoded. On a
    memorizing model that skips nearly every training row. (The decode's cached steps compute the same
    logits to about 1e-6, so only a near-tie of the top two tokens could have gone the other way.)"""
    assert prefix >= 1, prefix
    matches = hits[:, prefix - 1 :].clone()  # [n, suffix]: the predictions of the suffix tokens
    rest = ~matches.all(1)  # [n]: the rows greedy decoding must settle
    if rest.any():
        greedy = dict(do_sample=False, num_beams=1)
        matches[rest] = decoded_matches(model, tokens[rest], prefix, greedy, batch_size, seed)
    return matches


class SampledExtraction:
    """{setting: [n] probability that one sampled completion of the prefix is exactly the true suffix},
    gathered batch by batch from the table's forward pass (a `score_sequences` visitor)."""

    def __init__(self, prefix: int, settings: dict):
        self.prefix, self.settings = prefix, settings
        self.log_p: dict[str, list[torch.Tensor]] = {name: [] for name in settings}

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        logits = logits[:, self.prefix - 1 :]  # [b, suffix, vocab]: the predictions of the suffix tokens
        b, suffix, vocab = logits.shape
        truth = ids[:, self.prefix :].reshape(-1, 1)  # [b * suffix, 1]
        for name, setting in self.settings.items():
            scores = transform(logits.reshape(-1, vocab), setting)  # temperature, top-k, top-p; cut = -inf
            # log p(true token): its score less the log-sum-exp of the setting's scores
            chosen = (scores.gather(1, truth)[:, 0] - torch.logsumexp(scores, dim=-1)).view(b, suffix)
            self.log_p[name].append(chosen.double().sum(1).cpu())

    def probabilities(self) -> dict[str, np.ndarray]:
        return {name: torch.cat(v).exp().numpy() for name, v in self.log_p.items()}


def score(
    model,
    sides: list[Sequences],
    prefix: int,
    decoding: dict,
    batch_size: int,
    step: int,
    seed: int,
    mia_k: float,
    held_out: Population | None = None,
) -> pa.Table:
    """One evaluation's rows: every sequence of both sides with its scores (the columns of the module doc);
    `mia_k`: Min-K%'s share; `held_out`: the population DC-PDD and RMIA compare with. The sides went through
    `prepare_membership`."""
    columns: dict[str, list] = {}
    target_z = target_p(model, held_out, batch_size) if held_out is not None else None
    recall_prefix = held_out.recall_prefix if held_out is not None else None
    sampled = {k: v for k, v in decoding.items() if strategy_of(v) == "sample"}
    for side in sides:
        ordinary_train = side.split == "train" and side.kind == "sample"
        extraction = SampledExtraction(prefix, sampled) if ordinary_train and sampled else None
        scores = score_sequences(model, side.tokens, batch_size, moments=True, visit=extraction)
        greedy = greedy_matches(model, side.tokens, prefix, scores.hits, batch_size, seed)
        n = len(side.offsets)
        part = {
            "step": [step] * n,
            "split": [side.split] * n,
            "sequence_id": list(range(n)),
            "doc_id": side.doc_ids.tolist(),
            "offset": side.offsets.tolist(),
            "tokens": side.tokens.tolist(),
            "loss": scores.mean().tolist(),
            "suffix_match": greedy.float().mean(1).tolist(),
            "extracted": (greedy.all(1)).tolist(),
            "exact_match": scores.hit_rate().tolist(),
            "mem_bits": _or_nulls(bits.memorized_bits(scores.total().numpy(), side.reference_log2), n),
            "kind": [side.kind] * n,
            "copies": (side.copies.tolist() if side.copies is not None else [0] * n),
            "candidate": _candidates(side).tolist(),
        }
        compared = None
        if held_out is not None:
            # The prefix was sized for the table's sequences; longer planted ones would overrun the context.
            fits = recall_prefix is not None and side.tokens.shape[1] <= held_out.tokens.shape[1]
            conditioned = conditioned_log_probs(model, side.tokens, recall_prefix, batch_size) if fits else None
            compared = Compared(side.tokens.numpy(), held_out, target_z, conditioned)
        mia = membership.model_scores(scores, side.texts, mia_k, side.reference_log_probs, compared)
        mia["mia_blind"] = side.blind if side.blind is not None else [None] * n
        if recall_prefix is not None:  # null on the sides the prefix does not fit beside
            mia.setdefault("mia_recall", [None] * n)
        part.update({name: list(values) for name, values in mia.items()})
        if not ordinary_train:  # the greedy baseline only; other settings' cells null
            part.update({f"extraction/{name}": [None] * n for name in decoding})
            _extend(columns, part)
            continue
        probs = extraction.probabilities() if extraction is not None else {}
        for name, setting in decoding.items():
            if name in probs:
                part[f"extraction/{name}"] = probs[name].tolist()
            elif strategy_of(setting) == "greedy":
                part[f"extraction/{name}"] = greedy.all(1).double().tolist()
            else:  # beam search (and beam sampling, drawn once): decoded
                matches = decoded_matches(model, side.tokens, prefix, setting, batch_size, seed)
                part[f"extraction/{name}"] = matches.all(1).double().tolist()
        _extend(columns, part)
    return pa.table(
        {
            k: pa.array(v, type=pa.float64() if k.startswith(("extraction/", "mia_", "mem_bits")) else None)
            for k, v in columns.items()
        }
    )


def _or_nulls(values: np.ndarray | None, n: int) -> list:
    return values.tolist() if values is not None else [None] * n


def _extend(columns: dict[str, list], part: dict[str, list]) -> None:
    for key, values in part.items():
        columns.setdefault(key, []).extend(values)


def exposure_columns(
    sides: list[Sequences], starts: np.ndarray, last_seen: np.ndarray, length: int, block_size: int
) -> dict[str, np.ndarray]:
    """`exposures`, `token_exposures`, `last_seen_step` of every row: from the ledger for training
    sequences; 0, 0 and -1 for held-out ones, which no training window holds."""
    parts = []
    for side in sides:
        if side.positions is not None:  # planted copies: the exposures of every copy, summed
            copies = [
                sequence_exposures(starts, last_seen, np.asarray(p, np.int64), length, block_size)
                for p in side.positions
            ]
            parts.append(
                {
                    "exposures": np.array([c["exposures"].sum() for c in copies]),
                    "token_exposures": np.array([c["token_exposures"].sum() for c in copies]),
                    "last_seen_step": np.array([c["last_seen_step"].max(initial=-1) for c in copies]),
                }
            )
        elif side.split == "train":
            parts.append(sequence_exposures(starts, last_seen, side.offsets, length, block_size))
        else:
            n = len(side.offsets)
            parts.append(
                {
                    "exposures": np.zeros(n, np.int64),
                    "token_exposures": np.zeros(n),
                    "last_seen_step": np.full(n, -1, np.int64),
                }
            )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def aggregates(table: pa.Table, extraction_samples: int, resamples: int = 0, seed: int = 0) -> dict:
    """The `mem/` keys: means over the table's `kind == "sample"` rows of one evaluation, and the `mia/` keys
    (with `resamples` bootstrap draws behind their intervals)."""
    rows = table.filter(pa.compute.equal(table["kind"], "sample"))
    side = {s: rows.filter(pa.compute.equal(rows["split"], s)) for s in ("train", "val")}
    out = {}
    for s, part in side.items():
        out[f"mem/extraction_rate_{s}"] = _mean(part["extracted"])
        out[f"mem/suffix_match_{s}"] = _mean(part["suffix_match"])
        out[f"mem/exact_match_{s}"] = _mean(part["exact_match"])
        if part.num_rows and part["mem_bits"].null_count < part.num_rows:  # null: no reference for mem_bits
            out[f"mem/mem_bits_{s}"] = pa.compute.mean(part["mem_bits"]).as_py()
    out.update(membership.aggregates(rows, resamples, seed))
    out[MIA_AUC] = out["mia/loss/auc"]
    planted = table.filter(pa.compute.equal(table["kind"], "duplicate"))
    for copies in sorted(set(planted["copies"].to_pylist())):
        group = planted.filter(pa.compute.equal(planted["copies"], copies))
        out[f"dup/{copies}/extraction_rate"] = _mean(group["extracted"])
        out[f"dup/{copies}/suffix_match"] = _mean(group["suffix_match"])
        out[f"dup/{copies}/loss"] = _mean(group["loss"])
    forgotten = table.filter(pa.compute.equal(table["kind"], "forget"))
    if forgotten.num_rows:
        out["forget/extraction_rate"] = _mean(forgotten["extracted"])
        out["forget/suffix_match"] = _mean(forgotten["suffix_match"])
        out["forget/loss"] = _mean(forgotten["loss"])
        step = int(forgotten["step"][0].as_py())
        last = max(forgotten["last_seen_step"].to_pylist())
        if last >= 0:  # left out before the first step that held them
            out["forget/steps_since_seen"] = step - last
    for name in (c for c in table.column_names if c.startswith("extraction/")):
        p = np.asarray(side["train"][name], dtype=np.float64)
        setting = name.split("/", 1)[1]
        out[f"mem/{setting}/extraction_rate"] = float(p.mean())
        out[f"mem/{setting}/extraction_any"] = float((1 - (1 - p) ** extraction_samples).mean())
    return out


def _mean(column) -> float:
    values = np.asarray(column, dtype=np.float64)
    return float(values.mean()) if len(values) else math.nan
