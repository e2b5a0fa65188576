"""The sections of `gptfit.report`, in the report's order: each decides from what the runs hold (their keys,
their configs, their files), never from an experiment's name, whether it applies, and returns its heading,
its body and its figures. A study is found however its user named it.

Adding a section: a function `(Sweep) -> Section | None` here (or in its own module of show/, registered
here), placed in SECTIONS where it should print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gptfit.record import RunRecord
from gptfit.show.audit import audit_report
from gptfit.show.capacity import PAPER_BITS_PER_PARAM, capacity_report
from gptfit.show.finetune import (
    finetune_figures,
    finetune_table,
    frontier_note,
    matched_loss,
    pareto,
    spectrum_table,
    trajectories,
)
from gptfit.show.mitigations import mitigation_report
from gptfit.show.sweep import decoding_table, grammar_settings, grammar_tables, seed_table, settings_of
from gptfit.show.sweep_sequences import duplication_table, exposure_table, forgetting_table, membership_table
from gptfit.show.turn import turn_report
from gptfit.show.unlearning import unlearning_report


@dataclass
class Sweep:
    """What the sections read: the runs (gptfit.show.sweep.read_sweeps), the report's folder, the swept keys,
    and what one section found for a later one (`found`: capacity's fitted bits per parameter)."""

    runs: list[RunRecord]
    folder: Path
    swept: list[str]
    found: dict = field(default_factory=dict)


@dataclass
class Section:
    heading: str
    body: str
    figures: list[Path] = field(default_factory=list)
    printed: bool = False  # also printed to the terminal (the grammar's table)


def seeds(s: Sweep) -> Section | None:
    if "seed" not in s.swept and len(s.runs) <= 1:
        return None
    return Section("Mean and spread over seeds", seed_table(s.runs, s.swept))


def decoding(s: Sweep) -> Section | None:
    if not settings_of(s.runs):
        return None
    return Section("Decoding settings (mean over seeds; least copying first)", decoding_table(s.runs, s.swept))


def grammar(s: Sweep) -> Section | None:
    if not grammar_settings(s.runs):
        return None
    heading = "Grammar: held-out NLL per sentence (nats) and the sentences of the samples (mean over seeds)"
    return Section(heading, grammar_tables(s.runs, s.swept), printed=True)


def finetuning(s: Sweep) -> Section | None:
    table = finetune_table(s.runs)
    if table is None:
        return None
    parts = [table, frontier_note(pareto(trajectories(s.runs))), matched_loss(s.runs)]
    spectrum = spectrum_table(s.runs)
    if spectrum:
        parts.append("The rank that explains 90% of full fine-tuning's weight change, per matrix:\n\n" + spectrum)
    heading = "Fine-tuning: what each method learns, forgets and memorizes (mean ± sd over seeds)"
    return Section(heading, "\n\n".join(p for p in parts if p), finetune_figures(s.runs, s.folder))


def mitigations(s: Sweep) -> Section | None:
    found = mitigation_report(s.runs, s.folder)
    if found is None:
        return None
    return Section("Mitigations: what each arm costs and what it leaves memorized", found[0], [found[1][-1]])


def capacity(s: Sweep) -> Section | None:
    found = capacity_report(s.runs, s.folder)
    if found is None:
        return None
    s.found["bits_per_param"] = found[2]
    return Section("Capacity: the bits each model memorized, and bits per parameter", found[0], found[1][2:])


def turn(s: Sweep) -> Section | None:
    found = turn_report(s.runs, s.folder, s.found.get("bits_per_param"), PAPER_BITS_PER_PARAM)
    if found is None:
        return None
    return Section("The turn on text: memorization against dataset bits over capacity", found[0], [found[1][-1]])


def exposure(s: Sweep) -> Section | None:
    table = exposure_table(s.runs, s.folder)
    heading = (
        "Extraction against exposures (ordinary training sequences at the last evaluation; columns: token "
        "exposures, cells: extraction rate (sequences))"
    )
    return Section(heading, table) if table is not None else None


def duplication(s: Sweep) -> Section | None:
    table = duplication_table(s.runs)
    return Section("Duplication ladder: extraction rate by number of copies (final)", table) if table else None


def forgetting(s: Sweep) -> Section | None:
    table = forgetting_table(s.runs)
    return Section("Forgetting: the forgotten set when last seen and at the end", table) if table else None


def privacy_audit(s: Sweep) -> Section | None:
    found = audit_report(s.runs, s.folder)
    if found is None:
        return None
    heading = "Privacy audit in one run: the audit's lower bound on epsilon beside the accountant's"
    return Section(heading, found[0], found[1])


def unlearning(s: Sweep) -> Section | None:
    found = unlearning_report(s.runs, s.folder)
    if found is None:
        return None
    heading = "Unlearning: the forget set, what is retained, and the model retrained without it (mean ± sd over seeds)"
    return Section(heading, found[0], found[1])


def membership(s: Sweep) -> Section | None:
    table = membership_table(s.runs, s.swept)
    heading = "Membership inference by score (final; 95% intervals from a bootstrap over documents)"
    return Section(heading, table) if table is not None else None


SECTIONS: tuple[Callable[[Sweep], Section | None], ...] = (
    seeds,
    decoding,
    grammar,
    finetuning,
    mitigations,
    capacity,
    turn,
    exposure,
    duplication,
    forgetting,
    privacy_audit,
    unlearning,
    membership,
)
