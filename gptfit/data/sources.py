"""Where the documents of a corpus come from: the embedded corpus, local text files, `datasets`, or the
synthetic grammar.

A document is the unit the held-out split works on: a topic of the embedded corpus, a paragraph (or
line, or file) of a text file, a record of a dataset, a sentence of the grammar. Documents are never
cut by the split.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from pydoc_data.topics import topics

from gptfit.config import GrammarConfig
from gptfit.config.data import CorpusSource
from gptfit.config.grammar import spec_of
from gptfit.data.grammar import Grammar
from gptfit.data.stdlib import stdlib_docstrings
from gptfit.errors import UserError

BLANK_LINE = re.compile(r"\n(?:[^\S\n]*\n)+")  # a line break, then lines of nothing but whitespace


def python_docs() -> list[str]:
    """The language-reference topics that ship with CPython (`pydoc_data`), about 465,000 characters."""
    return [topics[name] for name in sorted(topics)]


def _text_files(path: str, key: str) -> list[str]:
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    elif p.is_file():
        files = [str(p)]
    else:
        files = sorted(f for f in glob.glob(str(p), recursive=True) if os.path.isfile(f))
    if not files and p.is_dir():
        raise UserError(f"{key}.path={path!r}: the folder holds no text files; put the corpus's files in it")
    if not files:
        raise UserError(f"{key}.path={path!r}: no such file or folder; give a text file, a folder or a glob pattern")
    files = [f for f in files if os.path.getsize(f) > 0]  # `datasets` fails on empty files
    if not files:
        raise UserError(f"{key}: the corpus {path!r} is empty; give it some text")
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(8192)
        if b"\x00" in head:
            raise UserError(f"{key}.path: {f} looks binary (NUL bytes); point {key}.path at UTF-8 text files")
    return files


def text_files(path: str, sample_by: str, key: str = "data") -> list[str]:
    """Local text files through `datasets.load_dataset("text")`, one document per paragraph/line/file."""
    import datasets  # about a second to import: only data=text and data=hf pay it

    files = _text_files(path, key)
    try:
        ds = datasets.load_dataset("text", data_files=files, split="train", sample_by=sample_by)
    except UnicodeDecodeError as e:
        raise UserError(f"{key}.path={path!r}: not UTF-8 text ({e.reason}); convert the files to UTF-8") from None
    except Exception as e:  # datasets wraps decoding errors in its own exception types
        if isinstance(e.__cause__ or e.__context__, UnicodeDecodeError):
            raise UserError(f"{key}.path={path!r}: not UTF-8 text; convert the files to UTF-8") from None
        raise
    if sample_by == "paragraph":
        # datasets cuts paragraphs at "\n\n" only; a line holding nothing but whitespace is a blank line too
        # (corpora such as WikiText separate their paragraphs with " \n").
        return [part for text in ds["text"] for part in BLANK_LINE.split(text)]
    return list(ds["text"])


def hf_dataset(path: str, config_name: str | None, split: str, column: str, key: str = "data") -> list[str]:
    """A dataset on the hub, or one saved with `save_to_disk`, through `datasets`."""
    import datasets  # about a second to import: only data=text and data=hf pay it

    local = Path(path).expanduser()
    try:
        if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise UserError(f"{key}.split={split!r}: not in {path}; available: {', '.join(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(path, config_name, split=split)
    except UserError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{key}.path={path!r}: could not load the dataset ({first}); check the name, "
            f"{key}.hf_config and {key}.split, or save it locally with save_to_disk"
        ) from None
    if column not in ds.column_names:
        raise UserError(f"{key}.text_column={column!r}: not a column of {path}; columns: {', '.join(ds.column_names)}")
    return [t for t in ds[column] if isinstance(t, str)]


def grammar_sentences(grammar: GrammarConfig) -> list[str]:
    """`n_sentences` independent draws of the grammar (repeats included), seeded by its seed."""
    spec = spec_of(grammar)
    return Grammar(spec).sentences(grammar.n_sentences, seed=spec.seed)


def load_documents(source: CorpusSource, cache_dir: str, key: str = "data") -> list[str]:
    """The non-blank documents of `source` (data.* or an eval.general corpus, named `key` in any error)."""
    if source.source == "python_docs":
        docs = python_docs()
    elif source.source == "python_stdlib":
        docs = python_docs() + stdlib_docstrings(Path(cache_dir).expanduser())
    elif source.source == "grammar":  # data.* only: eval.general takes no grammar
        docs = grammar_sentences(source.grammar)
    elif source.source == "text":
        docs = text_files(source.path, source.sample_by, key)
    else:
        docs = hf_dataset(source.path, source.hf_config, source.split, source.text_column, key)
    docs = [d for d in docs if d.strip()]
    if not docs:
        where = source.path or source.source
        raise UserError(f"{key}: the corpus {where!r} is empty; give it some text")
    return docs
