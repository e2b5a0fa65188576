"""The W&B workspace gptfit's runs are read in, as data: sections of panels, each naming the keys it charts.
`python -m gptfit.workspace` writes it as JSON (`--dry-run`) or saves it to W&B through `wandb-workspaces`
(`to_workspace`, the one place that library is imported).

W&B's automatic workspace gives a chart per key (about 125 for a small run) and hides nothing; this one
overlays what a user compares (train and validation loss on one chart, a line per decoding setting on the
copying chart) and puts the sweep's figures against the swept value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from gptfit import keys


@dataclass
class Panel:
    """A chart: `line` (history against tokens seen; `y` keys, or every key matching `regex`, one line each),
    `scatter` (a summary figure against a config value, one point per run) or `media` (images, tables, the
    page)."""

    kind: str
    title: str
    y: list[str] = field(default_factory=list)
    regex: str | None = None
    x: str = keys.TOKENS_SEEN


@dataclass
class Section:
    name: str
    panels: list[Panel]
    is_open: bool = True


def sections(swept: list[str]) -> list[Section]:
    """The workspace's sections; `swept`: the config keys a sweep varies (its sweep section plots the main
    figures against each), none for a single run."""
    out = [
        Section(
            "Overview",
            [
                Panel("line", "train and validation loss", [keys.TRAIN_LOSS, keys.VAL_LOSS]),
                Panel("line", "generalization gap (val - train loss)", [keys.GAP]),
            ],
        ),
        Section(
            "Memorization",
            [
                Panel("line", "extraction and exact match", [keys.EXTRACTION_TRAIN, "mem/exact_match_train"]),
                Panel("line", "extraction by decoding setting", regex=r"mem/[^/]+/extraction_rate$"),
                Panel("line", "memorized bits a training sequence", ["mem/mem_bits_train"]),
                # The measure's key <canary>/<name>/exposure, the one key of that shape (spelled here, not imported:
                # the measures pull in torch, which a dry run does not need).
                Panel("line", "exposure of planted secrets (bits)", regex=r"^[^/]+/[^/]+/exposure$"),
            ],
        ),
        Section(
            "Membership",
            [
                Panel("line", "membership AUC, every score", regex=r"mia/[^/]+/auc$"),
                Panel("line", "TPR at 1% FPR", regex=r"mia/[^/]+/tpr@1%fpr$"),
                Panel("line", "TPR at 0.1% FPR", regex=r"mia/[^/]+/tpr@0\.1%fpr$"),
            ],
        ),
        Section(
            "Copying by decoding setting",
            [
                Panel("line", "copy rate, a line per setting", regex=r"gen/[^/]+/copy_rate$"),
                Panel("line", "novel 8-grams, a line per setting", regex=r"gen/[^/]+/novel_8gram$"),
                Panel(
                    "line",
                    "longest verbatim copy (tokens), a line per setting",
                    regex=r"gen/[^/]+/longest_copy_tokens$",
                ),
            ],
        ),
        Section("Samples", [Panel("media", "samples, figures and the page", MEDIA)]),
    ]
    if swept:
        figures = [keys.VAL_LOSS, keys.GAP, keys.EXTRACTION_TRAIN, keys.MIA_AUC]
        out.append(Section("Sweep", [Panel("scatter", f"{y} against {x}", [y], x=x) for x in swept for y in figures]))
    return out


MEDIA = ["samples", "loss", "memorization", "mia/roc", "explore"]


def spec(name: str, entity: str | None, project: str, swept: list[str]) -> dict:
    """The workspace as JSON-ready data (what `--dry-run` writes)."""
    return {"name": name, "entity": entity, "project": project, "sections": [asdict(s) for s in sections(swept)]}


def to_workspace(described: dict, entity: str | None = None):
    """`spec`'s workspace as a `wandb_workspaces` Workspace, ready to `save()` (which needs a W&B server);
    `entity` where the runs named none (the API key's default entity)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def panel(p: dict):
        if p["kind"] == "media":
            return wr.MediaBrowser(title=p["title"], media_keys=p["y"])
        if p["kind"] == "scatter":
            return wr.ScatterPlot(title=p["title"], x=wr.Config(p["x"]), y=wr.SummaryMetric(p["y"][0]))
        return wr.LinePlot(title=p["title"], x=p["x"], y=p["y"], metric_regex=p["regex"])

    return ws.Workspace(
        entity=described["entity"] or entity,
        project=described["project"],
        name=described["name"],
        sections=[
            ws.Section(name=s["name"], panels=[panel(p) for p in s["panels"]], is_open=s["is_open"])
            for s in described["sections"]
        ],
    )
