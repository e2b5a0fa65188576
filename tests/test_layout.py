"""The house's rules, kept true by a test: no file over 450 lines, no function over 80 (in the package, the
tests, the benchmarks and the experiment scripts); every room of the package importing only the layers below
it (docs/ARCHITECTURE.md), the shared core (gptfit/core/) nothing of gptfit but itself and gptfit.errors; and
below the commands, no function taking the root config."""

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


# The layers of docs/ARCHITECTURE.md, bottom first: a room may import its own modules and the layers below it.
# Rooms on one layer (metrics and plots; run and show) may not import each other.
LAYERS = [
    {"__init__", "errors"},
    {"files", "keys"},
    {"core"},
    {"config"},
    {"record"},
    {"model"},
    {"data"},
    {"metrics", "plots"},
    {"page", "measures", "unlearning"},
    {"run", "show"},
    {"cli"},
    {"train", "sample", "attend", "explore", "report", "mia", "workspace"},
]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
COMMANDS = LAYERS[-1] | {"cli"}


def room(path: Path) -> str:
    """The room a module of the package belongs to: its subpackage, or its own name at the top."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def upward_imports(files) -> list[str]:
    """Every import of a room by a room on its own layer or above (top-level, function-local and
    TYPE_CHECKING imports alike: ast.walk sees them all)."""
    found = []
    for p, tree, _ in files:
        here = room(p)
        for node in ast.walk(tree):
            for name in imported(p, node):
                parts = name.split(".")
                if parts[0] != "gptfit" or len(parts) < 2:
                    continue
                there = parts[1]
                if there != here and RANK[there] >= RANK[here]:
                    found.append(f"{p.relative_to(PACKAGE.parent)} ({here}) imports {name} ({there})")
    return found


def test_every_room_imports_only_the_layers_below_it():
    files = modules()
    assert {room(p) for p, _, _ in files} <= set(RANK), "a room that docs/ARCHITECTURE.md does not place"
    assert not upward_imports(files)


def test_the_layer_check_fails_on_an_upward_import(tmp_path):
    # A probe: the check must see a function-local import of run/ from show/, and one of show/ from metrics/.
    probe = ast.parse("def f():\n    from gptfit.run import training\n")
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gptfit.show import sweep\n")
    found = upward_imports([(PACKAGE / "show" / "probe.py", probe, 2), (PACKAGE / "metrics" / "probe.py", typed, 3)])
    assert len(found) == 2 and "gptfit.run" in found[0] and "gptfit.show" in found[1]
    assert not upward_imports([(PACKAGE / "run" / "probe.py", ast.parse("from gptfit.metrics import scoring"), 1)])


def parameters(files):
    """(module, function, parameter, annotation) of every function below the commands."""
    for p, tree, _ in files:
        if room(p) in COMMANDS:
            continue
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = [*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs]
                for a in args:
                    yield p, f.name, a.arg, ast.unparse(a.annotation) if a.annotation else ""


def test_below_the_commands_no_function_takes_the_root_config():
    files = modules()
    # The composed DictConfig stays with the commands (and config/, which checks it); nothing below imports it.
    dict_config = [
        f"{p.relative_to(PACKAGE.parent)} imports DictConfig"
        for p, tree, _ in files
        if room(p) not in COMMANDS | {"config"}
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and any(a.name == "DictConfig" for a in node.names)
    ]
    assert not dict_config, dict_config
    named_cfg = [f"{p.relative_to(PACKAGE.parent)}:{f}" for p, f, arg, _ in parameters(files) if arg == "cfg"]
    assert not named_cfg, named_cfg
    # The typed root goes to the training recipe alone (and to the base model's cache, which runs one, and to
    # an unlearning run's set-up, which builds one from its source's); the recipe hands each step the sections
    # it uses.
    root = {(p.relative_to(PACKAGE).as_posix(), f) for p, f, _, note in parameters(files) if note == "Config"}
    assert root and {p for p, _ in root} == {"run/training.py", "run/base.py", "run/unlearning.py"}, root


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


def test_every_module_is_named_in_the_architecture_doc():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    unnamed = [
        path.relative_to(PACKAGE).as_posix()
        for path, _, _ in modules()
        if path.name != "__init__.py" and path.relative_to(PACKAGE).as_posix() not in doc
    ]
    # Top-level modules are named bare (train.py); nested ones by their path (run/training.py).
    assert not unnamed, unnamed


# Each study's word, in identifiers and string literals (not comments or docstrings) outside core/ and model/:
# a study lives in few rooms (its config, its data, its measure, its report), not on every floor.
STUDY_WORDS = ("capacity", "canary", "goldfish", "dedup", "saturation")
MAX_MODULES_PER_STUDY = 6


def spoken(tree: ast.Module) -> str:
    """The identifiers and string literals of a module, docstrings left out, lower case."""
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words.append(node.name)
        elif isinstance(node, ast.arg):
            words.append(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            words.append(node.arg)
        elif isinstance(node, ast.alias):
            words.append(f"{node.name} {node.asname or ''}")
        elif isinstance(node, ast.ImportFrom):
            words.append(node.module or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            words.append(node.value)
    return " ".join(words).lower()


def test_each_study_is_spoken_of_in_few_modules():
    texts = {p: spoken(tree) for p, tree, _ in modules() if room(p) not in ("core", "model")}
    spread = {w: sorted(p.relative_to(PACKAGE).as_posix() for p, t in texts.items() if w in t) for w in STUDY_WORDS}
    assert all(spread.values()), spread  # the check sees each word somewhere
    wide = {w: where for w, where in spread.items() if len(where) > MAX_MODULES_PER_STUDY}
    assert not wide, wide


def test_what_a_command_does_reads_in_short_functions():
    # run/, show/ and report.py hold the steps of a run and of a report: none over 60 lines.
    rooms = [PACKAGE / "run", PACKAGE / "show"]
    files = [(p, tree, n) for p, tree, n in modules() if p.parent in rooms or p == PACKAGE / "report.py"]
    assert any(p.name == "training.py" for p, _, _ in files) and any(p.name == "report.py" for p, _, _ in files)
    long = [
        f"{p.relative_to(ROOT)}:{f.name}: {f.end_lineno - f.lineno + 1}"
        for p, tree, _ in files
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.end_lineno - f.lineno + 1 > 60
    ]
    assert not long, long
