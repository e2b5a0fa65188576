"""Reading a finished run: what `gptfit.sample` and `gptfit.attend` print and draw of it."""
