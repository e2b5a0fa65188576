"""Membership inference per sequence: the scores of the literature, and how well each tells members apart.

Members are the per-sequence table's `kind == "sample"` training sequences, non-members its held-out ones.
Every score is higher for a sequence more likely a member, and the model-based ones read the L - 1
next-token predictions of an L-token sequence from the one forward pass that gives the table's loss
(`gptfit.metrics.scoring`), in float64. Each is a column `mia_<score>` of `sequences.parquet`.

How well a score separates the two sides: its ROC-AUC and its true-positive rate at 1% and 0.1% false
positives (Carlini et al. 2022; MIMIR's defaults), from scikit-learn's ROC, each with a 95% interval from a
percentile bootstrap (its draws' ROCs are taken as one array, `resampled_separation`, tested equal to
scikit-learn's). The bootstrap resamples whole documents, since the sequences of one document are not
independent; with fewer than 20 documents on a side a cluster bootstrap under-covers, so it resamples
sequences instead and says so (`resampling_unit`: the unit and the count of units on each side, which a run
writes into summary.json's `mia_intervals`). An AUC also gets a permutation p-value against 0.5
(`auc_p`), permuting the same units' labels. A TPR at a false-positive rate `fpr` needs at least 10 / fpr
non-members; with fewer it is null (`unestimable`).
"""

from __future__ import annotations

import math
import zlib as _zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import rankdata
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import auc, roc_curve
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

# The scores that read the model, in the order they are reported; `reference` needs a second model and
# `blind` none.
MODEL_SCORES = ("loss", "zlib", "min_k", "min_k_plus_plus")
# DC-PDD reads held-out token frequencies, `reference` and RMIA a reference model, `blind` no model.
SCORES = (*MODEL_SCORES, "dc_pdd", "recall", "reference", "rmia", "blind")
DC_PDD_CAP = 0.01  # Zhang et al.'s a: no token's term counts above it
# RMIA's offline slope and threshold (its tool's gamma). The paper's configs take a = 0.2-0.6 for image
# models; a sequence's geometric-mean token probability is about 0.01 here, where (1 + a) / 2 p + (1 - a) / 2
# with such an a is nearly the constant (1 - a) / 2 and drowns the reference. The a that attacks a reference
# best on shadow sweeps (gptfit.metrics.shadow.tuned_a) comes out at 0.9 to 1; one reference cannot tune
# it, so the single-reference score takes 1: the reference's own probability.
RMIA_A, RMIA_GAMMA = 1.0, 1.0
# False-positive rates at which the TPR is reported, by the name in the key (`mia/<score>/tpr@1%fpr`).
FPRS = {"1%": 0.01, "0.1%": 0.001}
# A rate of `fpr` is estimated from at least this many false positives' worth of non-members.
MIN_FALSE_POSITIVES = 10
MIN_DOCUMENTS = 20  # documents a side needs for the bootstrap to resample documents rather than sequences
PERMUTATIONS = 999  # label permutations behind an AUC's p-value: the smallest p is 1 / 1000
_DRAWS_AT_ONCE = 64  # bootstrap draws a step: [draws, sequences] arrays of bounded size


# -- the scores ---------------------------------------------------------------------------------------


def loss(log_probs: np.ndarray) -> np.ndarray:
    """[n] the mean token log-probability, minus the mean NLL (Yeom et al. 2018).
    log_probs: [n, L - 1] float64, log p(x_t | x_<t) of each sequence's targets."""
    return log_probs.mean(axis=1)


def zlib(log_probs: np.ndarray, texts: list[str]) -> np.ndarray:
    """[n] the `loss` score divided by the byte length of zlib.compress of the sequence's UTF-8 text
    (Carlini et al. 2021; MIMIR's zlib attack with its sign flipped): text that compresses well is
    predictable without being memorized, so its likelihood counts for less."""
    sizes = np.array([len(_zlib.compress(text.encode("utf-8"))) for text in texts], dtype=np.float64)
    return loss(log_probs) / sizes


def _lowest_mean(values: np.ndarray, k: float) -> np.ndarray:
    """[n] the mean of the lowest max(1, int(k n)) of each row's n values."""
    count = max(1, int(k * values.shape[1]))
    return np.sort(values, axis=1)[:, :count].mean(axis=1)


def min_k(log_probs: np.ndarray, k: float) -> np.ndarray:
    """[n] Min-K% Prob (Shi et al. 2023): the mean of the lowest max(1, int(k n)) of the n token
    log-probabilities. A member has few very unlikely tokens."""
    return _lowest_mean(log_probs, k)


def min_k_plus_plus(log_probs: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float) -> np.ndarray:
    """[n] Min-K%++ (Zhang et al. 2024): Min-K% over the normalized token scores
    z_t = (log p(x_t) - mu_t) / sigma_t, with mu_t = sum_v p(v) log p(v) and sigma_t^2 = sum_v p(v)
    (log p(v))^2 - mu_t^2 under the model's next-token distribution p at t. A member's tokens sit at a
    local maximum of the likelihood: well above the mean of the distribution that predicts them.
    Where sigma_t is 0 (all mass on one token, which is then the target) z_t is 0."""
    z = np.divide(log_probs - mu, sigma, out=np.zeros_like(log_probs), where=sigma > 0)
    return _lowest_mean(z, k)


def reference(log_probs: np.ndarray, reference_log_probs: np.ndarray) -> np.ndarray:
    """[n] the target's `loss` score minus a reference model's on the same tokens (Carlini et al. 2021):
    what the target knows about a sequence beyond how predictable such text is."""
    return loss(log_probs) - loss(reference_log_probs)


def dc_pdd(log_probs: np.ndarray, tokens: np.ndarray, log_inv_freq: np.ndarray, cap: float = DC_PDD_CAP) -> np.ndarray:
    """[n] DC-PDD (Zhang et al. 2024): the mean over each predicted token's first occurrence in the sequence of
    min(p(x_t) log(1 / f(x_t)), cap), f its frequency in a reference corpus (`log_inv_freq`, [vocab]): a
    token the model finds likely beyond how common it is counts towards membership, each token once.
    tokens: [n, L]; log_probs: [n, L - 1] of tokens[:, 1:]."""
    targets = np.asarray(tokens)[:, 1:]  # [n, L - 1]
    terms = np.minimum(np.exp(log_probs) * log_inv_freq[targets], cap)  # [n, L - 1]
    first = np.zeros(targets.shape, dtype=bool)
    for row, ids in enumerate(targets):
        first[row, np.unique(ids, return_index=True)[1]] = True
    return (terms * first).sum(1) / first.sum(1)


def recall(log_probs: np.ndarray, conditioned: np.ndarray) -> np.ndarray:
    """[n] ReCaLL (Xie et al. 2024): LL(x | P) / LL(x), the mean token log-likelihood after a prefix P of
    non-member text over the one without it (both negative). A non-member prefix lowers a member's likelihood
    more than a non-member's, so a larger ratio means a member."""
    return np.asarray(conditioned).mean(axis=1) / np.asarray(log_probs).mean(axis=1)


def rmia(
    target_x: np.ndarray, reference_x: np.ndarray, target_z: np.ndarray, reference_z: np.ndarray, gamma: float
) -> np.ndarray:
    """[n] RMIA (Zarifzadeh, Liu and Shokri 2024): the share of population samples z that x dominates,
    LR(x, z) = [p(x | target) / p(x)] / [p(z | target) / p(z)] > gamma.

    Each p is a sequence's geometric-mean token probability, exp(mean log p), in [0, 1] (the authors' tool
    for language models). `target_*`: the target's, [n] for x and [m] for z; `reference_*`: p(.) over the
    reference models, [n] and [m] as one array each (the mean of the references' p), or with the OUT models
    alone the offline correction p(.) = (1 + a) / 2 * mean_OUT p(.) + (1 - a) / 2 applied by the caller
    through `offline`. z must be non-members of the target and of every reference."""
    ratio_x = np.asarray(target_x, dtype=np.float64) / np.asarray(reference_x, dtype=np.float64)  # [n]
    ratio_z = np.asarray(target_z, dtype=np.float64) / np.asarray(reference_z, dtype=np.float64)  # [m]
    # LR(x, z) > gamma  <=>  ratio_z < ratio_x / gamma: count through the sorted population, not an [n, m] grid
    return np.searchsorted(np.sort(ratio_z), ratio_x / gamma, side="left") / len(ratio_z)


def offline(out_mean: np.ndarray, a: float) -> np.ndarray:
    """RMIA's offline p(x) from the mean probability under OUT reference models alone: the IN models' share
    approximated as the affine (1 + a) / 2 * p_OUT + (1 - a) / 2."""
    return (1 + a) / 2 * np.asarray(out_mean, dtype=np.float64) + (1 - a) / 2


def blind(tokens: np.ndarray, members: np.ndarray, documents: np.ndarray, seed: int) -> np.ndarray | None:
    """[n] out-of-fold membership scores of a classifier that never sees the model (Das et al. 2024):
    logistic regression with balanced class weights on counts of token 1- and 2-grams. The folds are
    grouped by document, or the classifier would learn which documents are which, and stratified, since
    folds of one class bias the pooled AUC below 0.5. Near 0.5 when members and non-members come from the
    same distribution: the audit of the split. None when there are too few documents for two folds."""
    members = np.asarray(members, dtype=bool)
    folds = min(5, *(len(np.unique(documents[members == side])) for side in (True, False)))
    if folds < 2:
        return None
    texts = [" ".join(map(str, row)) for row in np.asarray(tokens)]
    classifier = make_pipeline(
        CountVectorizer(token_pattern=r"\S+", ngram_range=(1, 2)),
        LogisticRegression(class_weight="balanced", max_iter=1000),
    )
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, texts, members, groups=documents, cv=cv, method="decision_function")


def model_scores(
    scores, texts: list[str], k: float, reference_log_probs: np.ndarray | None = None, held_out=None
) -> dict[str, np.ndarray]:
    """{`mia_<score>`: [n]} of the scores that read a model, from `gptfit.metrics.scoring.Scores` of
    sequences of one length (taken with moments=True); `reference_log_probs`: [n, L - 1] a reference
    model's token log-probabilities of the same sequences, or None; `held_out`: what DC-PDD, ReCaLL and RMIA
    compare with (gptfit.metrics.population.Compared), or None."""
    log_probs = -scores.losses.numpy()  # [n, L - 1] float64
    mu, sigma = scores.mu.numpy(), scores.sigma.numpy()
    out = {
        "mia_loss": loss(log_probs),
        "mia_zlib": zlib(log_probs, texts),
        "mia_min_k": min_k(log_probs, k),
        "mia_min_k_plus_plus": min_k_plus_plus(log_probs, mu, sigma, k),
    }
    if reference_log_probs is not None:
        out["mia_reference"] = reference(log_probs, reference_log_probs)
    if held_out is not None:
        population = held_out.population
        out["mia_dc_pdd"] = dc_pdd(log_probs, held_out.tokens, population.log_inv_freq)
        if held_out.conditioned is not None:
            out["mia_recall"] = recall(log_probs, held_out.conditioned)
        if reference_log_probs is not None and held_out.target_z is not None:  # one reference, OUT for all
            p_x, ref_x = np.exp(log_probs.mean(1)), offline(np.exp(reference_log_probs.mean(1)), RMIA_A)
            ref_z = offline(population.reference_p, RMIA_A)
            out["mia_rmia"] = rmia(p_x, ref_x, held_out.target_z, ref_z, RMIA_GAMMA)
    return out


# -- how well a score separates members from non-members -----------------------------------------------


def roc(members: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) at every threshold, none dropped."""
    false_pos, true_pos, _ = roc_curve(members, scores, sample_weight=weights, drop_intermediate=False)
    return false_pos, true_pos


def _tpr_at(false_pos: np.ndarray, true_pos: np.ndarray, fpr: float) -> float:
    return float(true_pos[false_pos <= fpr].max())


def estimable(n_nonmembers: int, fpr: float) -> bool:
    return n_nonmembers >= MIN_FALSE_POSITIVES / fpr - 1e-9


def unestimable(n_nonmembers: int) -> dict[str, str]:
    """{key suffix: why it is null} for the rates the non-members are too few to estimate."""
    return {
        f"tpr@{name}fpr": f"needs at least {math.ceil(MIN_FALSE_POSITIVES / fpr)} non-members "
        f"({MIN_FALSE_POSITIVES} / {fpr:g}); there are {n_nonmembers}"
        for name, fpr in FPRS.items()
        if not estimable(n_nonmembers, fpr)
    }


def separation(members: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """{"auc": ..., "tpr@1%fpr": ..., "tpr@0.1%fpr": ...}: a TPR is None where it cannot be estimated."""
    members = np.asarray(members, dtype=bool)
    false_pos, true_pos = roc(members, scores, weights)  # one ROC for all three figures
    n_nonmembers = int((~members).sum())
    out = {"auc": float(auc(false_pos, true_pos))}
    for name, fpr in FPRS.items():
        out[f"tpr@{name}fpr"] = _tpr_at(false_pos, true_pos, fpr) if estimable(n_nonmembers, fpr) else None
    return out


def resampled_separation(members: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """{figure: [draws]} of `separation` under each row of `weights` ([draws, n]), all draws at once.

    The same weighted ROC that scikit-learn's roc_curve builds (tested equal to `separation` on every
    draw): the scores sorted once, the weighted members and non-members above each distinct score summed
    along that order, the AUC by the trapezoid rule over the (FPR, TPR) points. roc_curve would spend
    0.4 ms of every 0.43 validating its inputs, 200 draws of five scores at every final evaluation."""
    members = np.asarray(members, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")  # [n] the highest first
    ranked = np.asarray(scores, dtype=np.float64)[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # [thresholds] the last row of each score
    w = np.asarray(weights, dtype=np.float64)[:, order]  # [draws, n]
    true_pos = np.cumsum(w * members[order], axis=1)[:, ends]  # [draws, thresholds]
    false_pos = np.cumsum(w * ~members[order], axis=1)[:, ends]
    zero = np.zeros((len(w), 1))
    tpr = np.hstack([zero, true_pos / true_pos[:, -1:]])  # [draws, 1 + thresholds], from the point (0, 0)
    fpr = np.hstack([zero, false_pos / false_pos[:, -1:]])
    out = {"auc": np.trapezoid(tpr, fpr, axis=1)}
    n_nonmembers = int((~members).sum())
    for name, rate in FPRS.items():
        if estimable(n_nonmembers, rate):
            out[f"tpr@{name}fpr"] = np.where(fpr <= rate, tpr, 0.0).max(axis=1)
    return out


def bootstrap(
    members: np.ndarray, scores: np.ndarray, units: np.ndarray, resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """{figure: (2.5th, 97.5th percentile)} of `separation` over `resamples` draws of whole units (documents,
    or sequences) with replacement (each sequence weighted by how often its unit was drawn)."""
    members = np.asarray(members, dtype=bool)
    _, group = np.unique(units, return_inverse=True)
    n_groups = int(group.max()) + 1
    rng = np.random.default_rng(seed)
    counts = np.stack(
        [np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups) for _ in range(resamples)]
    )  # [resamples, documents]
    weights = counts[:, group].astype(np.float64)  # [resamples, n]
    both = (weights[:, members].sum(1) > 0) & (weights[:, ~members].sum(1) > 0)
    weights = weights[both]  # a draw without one of the sides has no ROC
    draws: dict[str, list[np.ndarray]] = {}
    for first in range(0, len(weights), _DRAWS_AT_ONCE):
        for key, values in resampled_separation(members, scores, weights[first : first + _DRAWS_AT_ONCE]).items():
            draws.setdefault(key, []).append(values)
    return {
        key: (float(np.percentile(np.concatenate(v), 2.5)), float(np.percentile(np.concatenate(v), 97.5)))
        for key, v in draws.items()
    }


def resampling_unit(members: np.ndarray, documents: np.ndarray) -> tuple[dict, np.ndarray]:
    """(what the intervals rest on, the unit of each sequence): documents where each side has at least
    MIN_DOCUMENTS of them, else sequences; {"unit", "train_units", "val_units", "train_documents",
    "val_documents"}."""
    members = np.asarray(members, dtype=bool)
    docs = {side: len(np.unique(documents[members == (side == "train")])) for side in ("train", "val")}
    by_document = min(docs.values()) >= MIN_DOCUMENTS
    units = documents if by_document else np.arange(len(members)).astype(str)
    record = {
        "unit": "document" if by_document else "sequence",
        "train_units": docs["train"] if by_document else int(members.sum()),
        "val_units": docs["val"] if by_document else int((~members).sum()),
        "train_documents": docs["train"],
        "val_documents": docs["val"],
    }
    return record, units


def permutation_p(members: np.ndarray, scores: np.ndarray, units: np.ndarray, permutations: int, seed: int) -> float:
    """The two-sided p-value of an AUC as far from 0.5 as the observed one when membership is unrelated to
    the score: the units' member labels permuted (a unit's sequences keep one label), the AUC of each
    permutation from the rank sum (Mann-Whitney), p = (1 + as extreme) / (1 + permutations)."""
    members = np.asarray(members, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # [n] ties share their mean rank
    _, unit = np.unique(units, return_inverse=True)
    is_member_unit = np.zeros(unit.max() + 1, dtype=bool)
    is_member_unit[unit[members]] = True
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(is_member_unit) for _ in range(permutations)])  # [perms, units]
    labels = np.vstack([is_member_unit, shuffled])[:, unit]  # [1 + perms, n], the observed labels first
    n1 = labels.sum(1)
    n0 = len(members) - n1
    valid = (n1 > 0) & (n0 > 0)
    aucs = (labels @ ranks - n1 * (n1 + 1) / 2) / np.where(valid, n1 * n0, 1)  # [1 + perms]
    distance = np.abs(aucs - 0.5)
    extreme = int((distance[1:][valid[1:]] >= distance[0] - 1e-12).sum())
    return (1 + extreme) / (1 + int(valid[1:].sum()))


def document_groups(table: pa.Table) -> np.ndarray:
    """[rows] one label per document: the split's stream and the document's index in it (data.subset's
    candidates all come from the training pool, whichever side they are on)."""
    streams = ["pool" if c >= 0 else s for c, s in zip(table["candidate"].to_pylist(), table["split"].to_pylist())]
    return np.array([f"{s}:{d}" for s, d in zip(streams, table["doc_id"].to_pylist())])


def aggregates(rows: pa.Table, resamples: int, seed: int) -> dict:
    """The `mia/<score>/...` keys of one evaluation from its `kind == "sample"` rows: `auc`, `tpr@1%fpr`
    and `tpr@0.1%fpr` of each score in the table, and with `resamples` their `_lo` and `_hi` bounds and the
    AUC's permutation p-value `auc_p`, both over the units of `resampling_unit`."""
    members = np.asarray(pc.equal(rows["split"], "train"))
    _, units = resampling_unit(members, document_groups(rows))
    out = {}
    for name in SCORES:
        column = f"mia_{name}"
        if column not in rows.column_names or rows[column].null_count:
            continue
        scores = np.asarray(rows[column], dtype=np.float64)
        figures = separation(members, scores)
        bounds = bootstrap(members, scores, units, resamples, seed) if resamples else {}
        for key, value in figures.items():
            out[f"mia/{name}/{key}"] = value
            if resamples:
                lo, hi = bounds.get(key, (None, None)) if value is not None else (None, None)
                out[f"mia/{name}/{key}_lo"], out[f"mia/{name}/{key}_hi"] = lo, hi
        if resamples:
            out[f"mia/{name}/auc_p"] = permutation_p(members, scores, units, PERMUTATIONS, seed)
    return out


def interval_record(rows: pa.Table) -> dict:
    """What an evaluation's membership intervals rest on (`resampling_unit`'s record), for summary.json."""
    return resampling_unit(np.asarray(pc.equal(rows["split"], "train")), document_groups(rows))[0]


def ordinary(table: pa.Table) -> pa.Table:
    """The rows membership inference reads: the ordinary sequences (`kind == "sample"`) of both sides."""
    return table.filter(pc.equal(table["kind"], "sample"))


def nonmembers(rows: pa.Table) -> int:
    """How many of the `kind == "sample"` rows are non-members (held-out)."""
    return int(pc.sum(pc.equal(rows["split"], "val")).as_py() or 0)


def null_reasons(table: pa.Table) -> dict[str, str]:
    """{key suffix: why every score's figure of that name is null} for one evaluation's table."""
    return unestimable(nonmembers(ordinary(table)))


def roc_points(rows: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{score: (false-positive rates, true-positive rates)} of each score in the `kind == "sample"` rows."""
    members = np.asarray(pc.equal(rows["split"], "train"))
    return {
        name: roc(members, np.asarray(rows[f"mia_{name}"], dtype=np.float64), None)
        for name in SCORES
        if f"mia_{name}" in rows.column_names and not rows[f"mia_{name}"].null_count
    }
