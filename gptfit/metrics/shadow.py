"""What many models trained on random halves of the same candidates tell about each candidate.

Inputs are matrices over M models and N candidates: `members[m, x]` whether model m trained on candidate x,
and per-model scores of every candidate from its per-sequence table.
- LiRA (Carlini et al. 2022, "Membership inference attacks from first principles"): the statistic is the
  logit-scaled confidence phi = log p - log(1 - p) of p = exp(mean token log-probability). For a target
  model, the other models' phi of a candidate give Gaussians of it when in and when out. Online: the
  likelihood ratio N(phi; mu_in, s_in) / N(phi; mu_out, s_out); offline: the one-sided tail under the out
  Gaussian alone. With about 7 models a side per candidate, one variance shared by all candidates (one
  for in, one for out) is steadier than a per-candidate one, as the paper recommends for few models.
- Counterfactual memorization (Zhang et al. 2021): the mean per-token accuracy of the models trained
  with a candidate minus that of the models trained without it; and for the loss, out minus in.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


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


def counterfactual(measure: np.ndarray, members: np.ndarray) -> np.ndarray:
    """[N] mean of `measure` ([M, N]) over the models trained on each candidate minus over those not
    (nan where a side has no model)."""
    with np.errstate(invalid="ignore"):
        inside = (measure * members).sum(0) / members.sum(0)
        outside = (measure * ~members).sum(0) / (~members).sum(0)
    return inside - outside
