"""The corpus of a run: its sources, the fixed held-out split and size ladder, the tokenizer, training
windows, and the text planted in it (canaries, the grammar's sentences)."""
