"""A general corpus that ships with every Python: the docstrings of the standard library.

They are read from the standard library's source files with `ast` (no module is imported), one document
per module, class or function docstring (`ast.get_docstring`, so cleaned of indentation), in the order of
the files' paths and then of the source. Left out: site-packages, test and tests folders, idlelib and
lib2to3 (tests and tooling rather than library), and files that fail to decode or parse.

Parsing every file takes about 12 s, so the result is cached as JSON in the cache folder, keyed by the
Python version and a hash of the files read (path, size, mtime): another Python, or an upgraded one,
reads its own. A cache file that is unreadable, cut or altered (its documents no longer match its hash)
is rebuilt, never trusted. The docstrings differ between Python versions; `StdlibCorpus.hash` says which
were read.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

from gptfit.files import write_text_atomic

__all__ = ["StdlibCorpus", "content_hash", "read_docstrings", "source_files", "stdlib_corpus", "stdlib_docstrings"]

# Folders whose files are no part of the corpus, wherever they sit under the standard library.
EXCLUDED_FOLDERS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"})
CACHE_FORMAT = 1  # bump when what is read changes, so that old cache files are not taken for new ones


@dataclass(frozen=True)
class StdlibCorpus:
    """The standard library's docstrings, and what they were read from."""

    documents: list[str]
    files: int  # the source files parsed (some hold no docstring)
    python: str  # the version that was read, e.g. "3.11.7"
    hash: str  # content_hash(documents)


def stdlib_folder() -> Path:
    """This Python's standard library folder (its .py sources)."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path) -> list[Path]:
    """The .py files under `root`, sorted by their path relative to it, the excluded folders left out."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in EXCLUDED_FOLDERS)  # never descend into them
        files.extend(Path(folder) / n for n in names if n.endswith(".py"))
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def docstrings_of(source: bytes, filename: str = "<unknown>") -> list[str]:
    """The module, class and function docstrings of one source file, in source order; empty ones skipped.

    Raises SyntaxError, ValueError or UnicodeDecodeError for a file Python could not compile."""
    tree = ast.parse(source, filename)  # bytes: the file's own coding cookie decides the encoding
    nodes = [tree] + sorted(
        (n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))),
        key=lambda n: (n.lineno, n.col_offset),
    )
    found = (ast.get_docstring(n) for n in nodes)
    return [d for d in found if d and d.strip()]


def read_docstrings(root: Path) -> tuple[list[str], int]:
    """(the docstrings of every source file under `root`, the number of files parsed)."""
    documents, files = [], 0
    for path in source_files(root):
        try:
            found = docstrings_of(path.read_bytes(), str(path))
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            continue  # a deliberately broken or unreadable file is no part of the corpus
        documents.extend(found)
        files += 1
    return documents, files


def content_hash(documents: list[str]) -> str:
    """16 hex digits of sha256 over the documents, each prefixed by its length (no two lists collide)."""
    h = hashlib.sha256()
    for d in documents:
        data = d.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def files_key(root: Path) -> str:
    """A hash of what would be read: the Python version, and each file's relative path, size and mtime."""
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{sys.version}\0".encode())
    for path in source_files(root):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def stdlib_corpus(cache_dir: Path, root: Path | None = None) -> StdlibCorpus:
    """The standard library's docstrings (`root`: a standard library folder; None: this Python's), read
    from the cache in `cache_dir` when it holds this Python's for the same files, else parsed and cached."""
    root = Path(root) if root is not None else stdlib_folder()
    python = ".".join(map(str, sys.version_info[:3]))
    key = files_key(root)
    path = Path(cache_dir).expanduser() / "stdlib" / f"docstrings-{python}-{key}.json"
    cached = _load(path, key)
    if cached is not None:
        return cached
    documents, files = read_docstrings(root)
    corpus = StdlibCorpus(documents, files, python, content_hash(documents))
    _save(path, key, corpus)
    return corpus


def stdlib_docstrings(cache_dir: Path) -> list[str]:
    """This Python's standard-library docstrings, one document each (cached in `cache_dir`)."""
    return stdlib_corpus(cache_dir).documents


def _load(path: Path, key: str) -> StdlibCorpus | None:
    """The cached corpus, or None when there is none or it cannot be trusted (then it is rebuilt)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        corpus = StdlibCorpus(record["documents"], record["files"], record["python"], record["hash"])
        ok = (
            record.get("key") == key
            and isinstance(corpus.documents, list)
            and all(isinstance(d, str) for d in corpus.documents)
            and isinstance(corpus.files, int)
            and content_hash(corpus.documents) == corpus.hash
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, UnicodeError):
        ok = False
    if not ok:
        warnings.warn(
            f"rebuilding the standard-library corpus: its cache {path} is unreadable or altered", stacklevel=3
        )
        return None
    return corpus


def _save(path: Path, key: str, corpus: StdlibCorpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = dict(key=key, python=corpus.python, files=corpus.files, hash=corpus.hash, documents=corpus.documents)
    # ASCII (json's default escapes): a docstring may hold a lone surrogate (an escape in the source)
    write_text_atomic(path, json.dumps(record))
