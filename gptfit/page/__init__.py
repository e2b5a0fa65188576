"""The explorer page: one self-contained HTML file per run (and per sweep) that shows its curves, its text as
the model sees it, its samples with their copied spans, decoding and attention. Below run/ (which writes
the page at a run's end) and show/ (whose `explore` command writes it for a finished run)."""
