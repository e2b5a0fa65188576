"""Reading finished runs: what `gptfit.sample` and `gptfit.attend` print and draw of a run, and what
`gptfit.report` tabulates and draws of a sweep."""
