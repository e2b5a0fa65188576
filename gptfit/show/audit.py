"""The privacy audit's table and figure in `gptfit.report`: for every run with a one-run audit (data.audit;
its key `privacy/epsilon_lower`), the 95% lower bound on epsilon beside the accountant's upper bound, and what
the bound rests on (summary.json's `audit`)."""

from __future__ import annotations

from pathlib import Path

from gptfit.files import write_text_atomic
from gptfit.metrics.audit import epsilon_lower_bound
from gptfit.plots.audit import audit_figure
from gptfit.record import RunRecord
from gptfit.show.sweep import fmt

LOWER = "privacy/epsilon_lower"


def label(run: RunRecord) -> str:
    """A run by its DP-SGD: the accountant's target or noise, or none."""
    dp = run.config.train.dp
    if dp.target_epsilon is not None:
        return f"DP-SGD eps={dp.target_epsilon:g}"
    if dp.noise_multiplier is not None:
        return f"DP-SGD sigma={dp.noise_multiplier:g}"
    return "no DP"


def audit_report(runs: list[RunRecord], out: Path) -> tuple[str, list[Path]] | None:
    """The table (returned, and written to `out`/privacy_audit.md) and `out`/privacy_audit.png; None without
    audited runs."""
    audited = [r for r in runs if r.finished and r.final.get(LOWER) is not None]
    if not audited:
        return None
    lines = [
        "| run | seed | accountant's epsilon | delta | audit's lower bound (95%) | guesses | correct "
        "| sequences in / all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    points = []
    spent = lambda r: r.final.get("privacy/epsilon")  # noqa: E731
    for r in sorted(audited, key=lambda r: (spent(r) is None, spent(r) or 0)):  # no DP last
        audit, eps = r.summary.get("audit", {}), spent(r)
        accountant = fmt(eps) if eps is not None else "none (no DP)"
        lines.append(
            f"| {label(r)} | {r.config.seed} | {accountant} | {audit.get('delta', 0):.2g} "
            f"| {r.final[LOWER]:.2f} | {audit.get('guesses')} | {audit.get('correct')} "
            f"| {audit.get('included')} / {audit.get('sequences')} |"
        )
        points.append({"label": label(r), "epsilon": eps, "lower": r.final[LOWER]})
    text = "\n".join(lines)
    write_text_atomic(out / "privacy_audit.md", "# Privacy audit in one run\n\n" + text + "\n")
    r = audited[0].summary.get("audit", {}).get("guesses", 0)
    ceiling = epsilon_lower_bound(r, r, audited[0].summary.get("audit", {}).get("sequences", r), 0.0)
    return text, [audit_figure(points, ceiling, out / "privacy_audit.png")]
