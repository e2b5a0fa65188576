"""An unlearning run (unlearn.method), around the ordinary recipe: where it starts, what it trains on, and the
relearning attack at its end. The methods themselves live in gptfit/unlearning/.

It starts from the source run's final/ model (unlearn.run, or the run unlearn.source makes, cached like
model=base's base) with the source's data, model and evaluation sections, so its corpus, tokenizer and
per-sequence table are the source's. Its data.forget.until_step is 0, so none of its training windows holds
the forget set; the forget set comes to the method beside them. The model it is measured against is the
source run trained again with data.forget.until_step=0 (never seen, everything else alike), cached too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from gptfit.config import Config
from gptfit.data.corpus import Corpus
from gptfit.data.duplicates import spans
from gptfit.errors import UserError
from gptfit.files import FINAL_MODEL
from gptfit.metrics.sequences import pick
from gptfit.model.loading import load_model
from gptfit.plots.unlearning import relearn_curves
from gptfit.record import RunRecord
from gptfit.run.base import ensure_base
from gptfit.unlearning import Method, build_method
from gptfit.unlearning.data import WithForget
from gptfit.unlearning.relearn import attack

RELEARN_FIGURE = "relearn.png"


def source_of(config: Config, composed: Config | None) -> tuple[Config, Path]:
    """The source run's config and folder: unlearn.run's finished run, or `composed` (unlearn.source's
    checked config), trained into the cache on first use."""
    u = config.unlearn
    if u.run is not None:
        record = RunRecord.read(Path(u.run).expanduser())
        if not record.finished or not (record.dir / FINAL_MODEL).is_dir():
            raise UserError(
                f"unlearn.run={u.run}: holds no finished run (status: {record.status}); name the folder of a "
                "run that finished, or leave unlearn.run null to train unlearn.source's"
            )
        source, folder = record.config, record.dir
    else:
        folder = ensure_base(composed, "unlearn.source: the run that memorizes the forget set").parent
        source = composed
    forget = source.data.forget
    if not forget.on or forget.until_step == 0:
        raise UserError(
            f"unlearn.forget={u.forget}: the source run ({folder}) never trained on a forget set "
            "(its data.forget is off or until_step=0); unlearn a run that planted one (+data/forget=default)"
        )
    return source, folder


def unlearning_config(config: Config, composed: Config | None) -> Config:
    """The run's config: the source's data (forget set kept out of every window), model (from its final/),
    evaluation and cache; this run's training, decoding and logging; and where the source and retrained
    models are."""
    source, folder = source_of(config, composed)
    never = dataclasses.replace(source.data, forget=dataclasses.replace(source.data.forget, until_step=0))
    quiet = dataclasses.replace(source.logger, backend="none")
    retrain = dataclasses.replace(source, data=never, logger=quiet, run_dir="unset")
    retrained = ensure_base(retrain, "the retrained model (unlearning's gold standard)")
    kind = "gpt" if source.model.kind == "base" else source.model.kind  # the base's weights are in final/ already
    model = dataclasses.replace(source.model, kind=kind, init_from=str(folder / FINAL_MODEL))
    unlearn = dataclasses.replace(config.unlearn, source_dir=str(folder), retrained=str(retrained))
    out = dataclasses.replace(config, model=model, data=never, eval=table_of(source, config), unlearn=unlearn)
    problems = out.problems()
    if problems:
        raise UserError(f"unlearn: the source run's config does not fit this run: {'; '.join(problems)}")
    return out


# What shapes the per-sequence table, taken from the source so that both runs score the same sequences.
TABLE_FIELDS = ("prefix_tokens", "suffix_tokens", "sequences", "heldout_sequences", "mia", "general")


def table_of(source: Config, config: Config):
    """This run's eval section (its cadence, samples, page) with the source's table."""
    return dataclasses.replace(config.eval, **{name: getattr(source.eval, name) for name in TABLE_FIELDS})


def forget_tokens(corpus: Corpus) -> torch.Tensor:
    return torch.from_numpy(np.asarray(corpus.forgotten.tokens, dtype=np.int64))  # [n, L]


def retained_sample(corpus: Corpus, count: int) -> torch.Tensor:
    """[count, L] ordinary training sequences of the forget set's length that touch no planted copy."""
    length = corpus.forgotten.tokens.shape[1]
    planted = spans(len(corpus.train), [corpus.forgotten, *corpus.planted], length)
    return pick(corpus.train, corpus.eot_id, length, count, "train", planted).tokens


def objective(config: Config, corpus: Corpus, model) -> Method:
    """The method, prepared on the starting model where it reads it (loaded again, so that a resumed run
    prepares the same)."""
    method = build_method(config.unlearn)
    forget = forget_tokens(corpus)
    start = None
    if method.needs_start:
        start = load_model(config.model.init_from).eval()
        for p in start.parameters():
            p.requires_grad_(False)
    method.prepare(model, start, forget, retained_sample(corpus, len(forget)))
    return method


def with_forget(dataset, corpus: Corpus) -> WithForget:
    return WithForget(dataset, forget_tokens(corpus))


def relearn(config: Config, corpus: Corpus, model, run_dir: Path) -> dict:
    """The relearning attack on this model and on the retrained one: fine-tune on the first half of the forget
    set (or on as many held-out sequences), measure the second half. {"forget"|"heldout": {model: curve}}."""
    u, e = config.unlearn, config.eval
    forget = forget_tokens(corpus)
    half = len(forget) // 2
    heldout = pick(corpus.val, corpus.eot_id, forget.shape[1], half, "val").tokens
    retrained = load_model(u.retrained).to(next(model.parameters()).device)
    out: dict = {}
    for name, train_on in (("forget", forget[:half]), ("heldout", heldout)):
        out[name] = {
            who: attack(m, train_on, forget[half:], u.relearn_steps, config.train.lr, e.prefix_tokens, e.batch_size)
            for who, m in (("unlearned", model), ("retrained", retrained))
        }
    relearn_curves(out, run_dir / RELEARN_FIGURE)
    return out
