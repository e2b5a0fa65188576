"""The explorer page as one self-contained HTML file: its script, styles, plotly.js (the basic bundle,
plotly.js-basic-dist-min 4.1.1, MIT, kept gzipped in explore_assets/) and its data are all inside it, so
it opens from disk with no server and no network."""

from __future__ import annotations

import gzip
import html
from importlib import resources

from gptfit.page.explore_data import to_json

VIEWS = {
    "curves": "Curves",
    "text": "Text",
    "samples": "Samples",
    "decoding": "Decoding playground",
    "attention": "Attention",
}
HELP = {
    "curves": "Losses, gap and the memorization and membership rates against tokens seen; the dotted line is "
    "the step with the lowest validation loss. Hover for the values.",
    "text": "Each token coloured by its loss (white: 0 nats, red: 8 or more); underlined green where the model's "
    "most probable token is the true one. Hover a token for its loss, rank and top 5 predictions.",
    "samples": "Every decoding setting's completions; verbatim copies of the training text are highlighted. "
    "Hover a copy for the training document it came from.",
    "decoding": "The model's next-token distribution along the greedy path. The transforms run in the page in "
    "gptfit.core.sampling's order: temperature, then top-k (ties kept), then top-p. Below: the "
    "beam-search tree, pruned candidates in grey.",
    "attention": "The attention of the attention prompt. Hover a token on the left to see what it attends to "
    "(opacity = weight); the causal mask leaves later tokens out.",
}


def _asset(name: str) -> str:
    path = resources.files("gptfit.page").joinpath("explore_assets", name)
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    return path.read_text(encoding="utf-8")


def page(data: dict, title: str, views=tuple(VIEWS)) -> str:
    """The page's HTML with `views` (keys of VIEWS) in that order."""
    nav = " ".join(f'<a href="#{v}">{VIEWS[v]}</a>' for v in views)
    sections = "\n".join(
        f'<section id="{v}" data-view="{v}"><h2>{VIEWS[v]}</h2><p class="label">{HELP[v]}</p>'
        f'<div class="body"></div></section>'
        for v in views
    )
    # A script element ends at the first "</script": the JSON escapes "</", and the bundles hold none.
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_asset("explore.css")}</style></head>
<body><h1>{html.escape(title)}</h1><nav>{nav}</nav>
{sections}
<script id="gptfit-data" type="application/json">{to_json(data)}</script>
<script>{_asset("plotly-basic.min.js.gz")}</script>
<script>{_asset("explore.js")}</script>
</body></html>
"""
