"""The standard library's docstrings as a corpus: what is read and left out, in a fixed order, cached by
the files read, and a cache that cannot be trusted is rebuilt."""

from __future__ import annotations

import json
import warnings

import pytest

from gptfit.data import stdlib
from gptfit.data.stdlib import content_hash, source_files, stdlib_corpus

MODULE = '''"""The module."""


class Box:
    """A box.

    Cleaned of the common indent,
        but not of the relative one.
    """

    def open(self):
        """Open it."""

        def inner():
            """Nested functions count too."""


async def fetch():
    """Fetch."""


def plain():
    return 1
'''


def write(path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)


@pytest.fixture
def fake_stdlib(tmp_path):
    """A small standard library: read files, left-out folders, and files Python cannot compile."""
    root = tmp_path / "lib"
    write(root / "box.py", MODULE)
    write(root / "pkg" / "__init__.py", '"""The package."""\n')
    write(root / "pkg" / "empty.py", "x = 1\n")  # parsed, but no docstring
    write(root / "latin.py", '# -*- coding: latin-1 -*-\n"""Caf\xe9."""\n'.encode("latin-1"))
    for folder in ("test", "pkg/tests", "idlelib", "lib2to3", "site-packages/thing"):
        write(root / folder / "left_out.py", f'"""{folder} is left out."""\n')
    write(root / "broken.py", '"""Never read."""\ndef (:\n')
    write(root / "nul.py", b'"""Never read."""\n\x00\n')
    write(root / "undecodable.py", b'"""Never \xff read."""\n')
    write(root / "notes.txt", '"""Not Python."""\n')
    return root


def test_reads_each_docstring_in_path_then_source_order(fake_stdlib, tmp_path):
    corpus = stdlib_corpus(tmp_path / "cache", fake_stdlib)
    assert corpus.documents == [
        "The module.",
        "A box.\n\nCleaned of the common indent,\n    but not of the relative one.",
        "Open it.",
        "Nested functions count too.",
        "Fetch.",
        "Café.",
        "The package.",
    ]
    assert corpus.files == 4  # box, latin, pkg/__init__, pkg/empty: the broken ones are skipped
    assert corpus.hash == content_hash(corpus.documents)


def test_left_out_folders_are_never_listed(fake_stdlib):
    listed = [p.relative_to(fake_stdlib).as_posix() for p in source_files(fake_stdlib)]
    assert listed == sorted(listed)
    assert not any(part in stdlib.EXCLUDED_FOLDERS for name in listed for part in name.split("/"))
    assert "box.py" in listed and "pkg/empty.py" in listed


def test_the_hash_tells_lists_apart():
    assert content_hash(["ab", "c"]) != content_hash(["a", "bc"]) != content_hash(["abc"])
    assert content_hash(["a\udc80"]) == content_hash(["a\udc80"])  # a lone surrogate still hashes


def test_a_second_read_comes_from_the_cache(fake_stdlib, tmp_path, monkeypatch):
    first = stdlib_corpus(tmp_path / "cache", fake_stdlib)
    monkeypatch.setattr(stdlib, "read_docstrings", lambda root: pytest.fail("parsed again"))
    assert stdlib_corpus(tmp_path / "cache", fake_stdlib) == first
    written = list((tmp_path / "cache" / "stdlib").iterdir())
    assert len(written) == 1 and written[0].suffix == ".json"  # no temporary file left behind


def test_a_changed_file_is_read_again(fake_stdlib, tmp_path):
    first = stdlib_corpus(tmp_path / "cache", fake_stdlib)
    write(fake_stdlib / "pkg" / "empty.py", '"""Now it has one."""\n')
    second = stdlib_corpus(tmp_path / "cache", fake_stdlib)
    assert second.documents == first.documents + ["Now it has one."]
    assert second.hash != first.hash


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "not json",
        lambda text: text.replace("Open it.", "Tampered."),  # valid JSON, documents altered
        lambda text: json.dumps({**json.loads(text), "documents": [1, 2]}),
    ],
)
def test_a_cache_that_cannot_be_trusted_is_rebuilt(fake_stdlib, tmp_path, damage):
    first = stdlib_corpus(tmp_path / "cache", fake_stdlib)
    (cached,) = (tmp_path / "cache" / "stdlib").iterdir()
    cached.write_text(damage(cached.read_text()))
    with pytest.warns(UserWarning, match="rebuilding the standard-library corpus"):
        again = stdlib_corpus(tmp_path / "cache", fake_stdlib)
    assert again == first
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is whole again
        assert stdlib_corpus(tmp_path / "cache", fake_stdlib) == first


def test_this_pythons_stdlib_is_listed_without_tests_or_idlelib():
    root = stdlib.stdlib_folder()
    listed = [p.relative_to(root).parts for p in source_files(root)]
    assert 400 < len(listed) < 1500  # 601 on Python 3.11.7
    assert ("json", "__init__.py") in listed and ("ast.py",) in listed
    assert not any({"test", "tests", "idlelib", "lib2to3", "site-packages"} & set(parts) for parts in listed)


def test_a_real_package_reads_the_same_twice(tmp_path):
    root = stdlib.stdlib_folder() / "json"  # the whole library takes seconds to parse; one package shows it
    corpus = stdlib_corpus(tmp_path / "cache", root)
    assert corpus.files == len(source_files(root)) and len(corpus.documents) > 20
    assert any(d.startswith("JSON (JavaScript Object Notation)") for d in corpus.documents)
    again = stdlib_corpus(tmp_path / "other", root)  # parsed afresh into another cache
    assert again == corpus
