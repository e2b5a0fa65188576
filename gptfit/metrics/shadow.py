"""What many models trained on random halves of the same candidates tell about each candidate.

Inputs are matrices over M models and N candidates: `members[m, x]` whether model m trained on candidate x,
and per-model scores of every candidate from its per-sequence table.
- LiRA (Carlini et al. 2022, "Membership inference attacks from first principles"): the statistic is the
  logit-scaled confidence phi = log p - log(1 - p) of p = exp(mean token log-probability). For a target
  model, the other models' phi of a candidate give Gaussians of it when in and when out. Online: the
  likelihood ratio N(phi; mu_in, s_in) / N(phi; mu_out, s_out); offline: the one-sided tail under the out
  Gaussian alone. With about 7 models a side per candidate, one variance shared by all candidates (one
  for in, one for out) is steadier than a per-candidate one, as the paper recommends for few models.
- RMIA (Zarifzadeh, Liu and Shokri 2024; the formula is `gptfit.metrics.membership.rmia`): p(x | model)
  is the geometric-mean token probability exp(-mean token loss). Online: p(x) is the mean of p(x | ref)
  over the other models, with x and without; offline: `membership.offline` of the mean over those without.
  RMIA compares x with population samples z that are non-members of the target and of every reference.
  A shadow sweep's tables hold none: every row is a candidate, and each candidate is a member of about half
  the models. So, departing from the paper, the population of a target is its own non-member candidates,
  each with p(z) from the references that did not train on it (the paper's p(z) over references that all
  left z out), offline-corrected in the offline test as the authors' tool does. A candidate z with no such
  reference is left out of the population. gamma = 1 (the tool's). The offline a is picked per target as
  the tool picks it, by attacking another model (`tuned_a`): p = exp(-loss) of a language model's text is
  about 0.01, so a fixed a of 0.3 would make p(x) about the constant 0.35 and the offline test nearly the
  loss attack; which a calibrates best depends on the sweep.
- Counterfactual memorization (Zhang et al. 2021): the mean per-token accuracy of the models trained
  with a candidate minus that of the models trained without it; and for the loss, out minus in.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from gptfit.metrics import membership

# RMIA's offline a: p(x) taken as (1 + a) / 2 * p_OUT + (1 - a) / 2. Chosen per target from A_GRID
# (`tuned_a`); OFFLINE_A, within the paper's 0.2-0.6, where too few models leave nothing to choose it on.
A_GRID = np.round(np.arange(0.0, 1.01, 0.1), 1)  # [11] the authors' tool's grid
OFFLINE_A = 0.3
# RMIA's gamma: x counts a z as dominated when LR(x, z) > gamma (the authors' tool; the paper's configs use 2).
GAMMA = 1.0


def logit_confidence(mean_log_prob: np.ndarray) -> np.ndarray:
    """phi = log p - log(1 - p) of p = exp(mean token log-probability), without forming 1 - p by subtraction."""
    return mean_log_prob - np.log(-np.expm1(mean_log_prob))


def _side_means(phi: np.ndarray, members: np.ndarray, shadows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N] mean phi of each candidate over the shadow models that trained on it, and over those that did not
    (nan where a candidate has none on that side)."""
    inside = members & shadows[:, None]  # [M, N]
    outside = ~members & shadows[:, None]
    with np.errstate(invalid="ignore"):
        mu_in = (phi * inside).sum(0) / inside.sum(0)
        mu_out = (phi * outside).sum(0) / outside.sum(0)
    return mu_in, mu_out


def _shared_std(phi: np.ndarray, mu: np.ndarray, side: np.ndarray) -> float:
    """The standard deviation of phi about its candidate's mean, pooled over every (model, candidate) of a side."""
    residuals = (phi - mu[None, :])[side & np.isfinite(mu)[None, :]]
    return float(residuals.std(ddof=1)) if len(residuals) > 1 else 1.0


def lira(phi: np.ndarray, members: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """{"online": [N], "offline": [N]} LiRA scores (higher = member) of every candidate for model `target`,
    the Gaussians fitted on the other models. A candidate that no other model trained on (or all did)
    takes the mean shift between the sides over the candidates that have both."""
    shadows = np.arange(len(phi)) != target
    mu_in, mu_out = _side_means(phi, members, shadows)
    shift = np.nanmean(mu_in - mu_out)
    mu_in = np.where(np.isnan(mu_in), mu_out + shift, mu_in)
    mu_out = np.where(np.isnan(mu_out), mu_in - shift, mu_out)
    s_in = _shared_std(phi, mu_in, members & shadows[:, None])
    s_out = _shared_std(phi, mu_out, ~members & shadows[:, None])
    x = phi[target]
    online = norm.logpdf(x, mu_in, s_in) - norm.logpdf(x, mu_out, s_out)
    offline = norm.logcdf((x - mu_out) / s_out)  # how far above the out Gaussian: log P(phi_out <= x)
    return {"online": online, "offline": offline}


def rmia(
    p: np.ndarray,
    members: np.ndarray,
    target: int,
    a: float,
    gamma: float = GAMMA,
    references: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """{"online": [N], "offline": [N]} RMIA scores in [0, 1] (higher = member) of every candidate for model
    `target`. p: [M, N] each model's geometric-mean token probability of each candidate; `references`: [M]
    bool, the reference models (default: every model but the target). The population is the target's
    non-members that some reference left out (module docstring). A candidate that no reference left out
    takes, offline, the mean over all references as its p_OUT: the best there is, which overstates p(x) and
    so understates its score."""
    if references is None:
        references = np.arange(len(p)) != target
    ref_p, out = p[references], ~members[references]  # [R, N] each
    with np.errstate(invalid="ignore"):
        out_mean = (ref_p * out).sum(0) / out.sum(0)  # [N], nan where no reference left the candidate out
    population = ~members[target] & (out.sum(0) > 0)  # [N] bool: the z of this target
    z, out_z = p[target, population], out_mean[population]  # [m] each
    out_x = np.where(np.isnan(out_mean), ref_p.mean(0), out_mean)  # [N]
    # Online, p(.) is the mean over every reference, IN and OUT, for x and z alike.
    online = membership.rmia(p[target], ref_p.mean(0), z, ref_p.mean(0)[population], gamma)
    offline_x, offline_z = membership.offline(out_x, a), membership.offline(out_z, a)
    return {"online": online, "offline": membership.rmia(p[target], offline_x, z, offline_z, gamma)}


def tuned_a(p: np.ndarray, members: np.ndarray, target: int) -> float:
    """The offline a for attacking `target`, picked as the authors' tool picks it: of 0, 0.1, ..., 1, the one
    whose offline RMIA best attacks (highest AUC) another model, the next one, with the models other than
    both as references; neither the target's scores nor its memberships are read. `OFFLINE_A` with fewer
    than 3 models, which leave no reference for that attack."""
    models = len(p)
    if models < 3:
        return OFFLINE_A
    other = (target + 1) % models
    references = (np.arange(models) != target) & (np.arange(models) != other)  # [M] bool
    aucs = [
        membership.separation(members[other], rmia(p, members, other, a, references=references)["offline"])["auc"]
        for a in A_GRID
    ]
    return float(A_GRID[int(np.argmax(aucs))])  # the first best, as the tool's strict > keeps it


def counterfactual(measure: np.ndarray, members: np.ndarray) -> np.ndarray:
    """[N] mean of `measure` ([M, N]) over the models trained on each candidate minus over those not
    (nan where a side has no model)."""
    with np.errstate(invalid="ignore"):
        inside = (measure * members).sum(0) / members.sum(0)
        outside = (measure * ~members).sum(0) / (~members).sum(0)
    return inside - outside
