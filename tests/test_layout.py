"""The house's rules, kept true by a test: no file over 450 lines, no function over 80 (in the package, the
tests, the benchmarks and the experiment scripts), and the shared core (gptfit/core/) importing nothing
of gptfit outside itself and gptfit.errors."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gptfit"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 80


def modules(*folders: Path) -> list[tuple[Path, ast.Module, int]]:
    """Every Python file of the package (or of `folders`): its path, syntax tree and line count."""
    out = []
    for folder in folders or (PACKAGE,):
        for path in sorted(folder.rglob("*.py")):
            text = path.read_text()
            out.append((path, ast.parse(text), len(text.splitlines())))
    return out


# The size rules hold for the tests, benchmarks and experiment scripts too.
EVERYTHING = (PACKAGE, ROOT / "tests", ROOT / "bench", ROOT / "experiments")


def imported(path: Path, node: ast.AST) -> list[str]:
    """The absolute names an import statement brings in (relative ones resolved against `path`)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if not node.level:
        return [node.module or ""]
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[: -node.level]
    return [".".join([*package, *([node.module] if node.module else [])])]


def test_no_file_is_longer_than_450_lines():
    files = modules(*EVERYTHING)
    assert any(p.parent.name == "bench" for p, _, _ in files) and any(p.parent.name == "tests" for p, _, _ in files)
    long = [f"{p.relative_to(ROOT)}: {n}" for p, _, n in files if n > MAX_FILE_LINES]
    assert not long, long


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{p.relative_to(ROOT)}:{f.name}: {f.end_lineno - f.lineno + 1}"
        for p, tree, _ in modules(*EVERYTHING)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_the_core_imports_nothing_above_it():
    core = PACKAGE / "core"
    upward = [
        f"{p.relative_to(PACKAGE.parent)} imports {name}"
        for p, tree, _ in modules()
        if core in p.parents
        for node in ast.walk(tree)  # top-level and function-local imports alike
        for name in imported(p, node)
        if name.split(".")[0] == "gptfit" and not (name == "gptfit.errors" or name.startswith("gptfit.core"))
    ]
    assert not upward, upward


def test_the_import_check_sees_what_it_must():
    # The check above would pass vacuously if it found no imports: it must see the core's own ones.
    core_imports = {
        name
        for p, tree, _ in modules()
        if (PACKAGE / "core") in p.parents
        for node in ast.walk(tree)
        for name in imported(p, node)
    }
    assert "gptfit.core.sampling.cache" in core_imports and "gptfit.errors" in core_imports
    relative = ast.parse("from ...model import gpt").body[0]  # gptfit.core.sampling.x -> gptfit.model
    assert imported(PACKAGE / "core" / "sampling" / "x.py", relative) == ["gptfit.model"]
