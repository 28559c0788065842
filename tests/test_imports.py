"""The package's modules import on their own and import each other without a cycle, counting
imports inside functions too (a function-level import only hides a cycle until it runs); the
few imports deferred into functions are counted and each says why."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import lift_mlx

PACKAGE = Path(lift_mlx.__file__).parent


def _dotted(path: Path) -> str:
    """A module's name inside the package: "cli", "adapters.lora"; a sub-package's __init__
    is the sub-package ("adapters"), the package's own is "__init__"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


FILES = {_dotted(p): p for p in sorted(PACKAGE.rglob("*.py")) if "data" not in p.parts}
MODULES = sorted(FILES)
# "lift_mlx.MODULE:attribute" strings name modules imported by name (the CLI's lazy commands)
NAMED = re.compile(r"lift_mlx\.([\w.]+)(:\w+)?")
MAX_DEFERRED = 30  # imports inside functions, each commented with its reason


def _package_of(module: str) -> list[str]:
    if module == "__init__":
        return []
    parts = module.split(".")
    is_package = FILES[module].name == "__init__.py" if module in FILES else False
    return parts if is_package else parts[:-1]


def _known(parts: list[str]) -> str | None:
    """The longest module of the package that `parts` (a dotted path) names or lies in."""
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in FILES:
            return ".".join(parts[:end])
    return "__init__" if not parts else None


def imports_in(source: str, module: str = "__init__") -> set[str]:
    """The lift_mlx modules a module's source imports anywhere in its code; `from . import
    NAME` of a name that is no module reads the package itself (its __init__). Imports under
    `if TYPE_CHECKING:` are for type checkers only and never run."""
    tree = ast.parse(source)
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for inner in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        target = None
        if isinstance(node, ast.ImportFrom) and node.level:
            base = _package_of(module)
            base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
            target = base + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lift_mlx"):
            target = node.module.split(".")[1:]
        if target is not None:
            for a in node.names:  # a module of the package, else a name in `target`
                sub = ".".join([*target, a.name])
                found.add(sub if sub in FILES else _known(target) or "__init__")
        elif isinstance(node, ast.Import):
            found |= {_known(a.name.split(".")[1:]) for a in node.names
                      if a.name.startswith("lift_mlx.")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if m := NAMED.fullmatch(node.value):
                found.add(_known(m.group(1).split(".")))
    return {m for m in found if m in FILES or m == "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that ends where it starts, or None."""
    state = {}  # module -> "open" while on the path, "done" once all it reaches is checked

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                return [*path[path.index(dep):], dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def _commented(lines: list[str], line: int) -> bool:
    """Whether the import on `line` (1-based) says why it waits: a comment on it, on another
    import of the run of import lines it is in, or on the line above that run."""
    first = line
    while first > 1 and lines[first - 2].strip().startswith(("import ", "from ")):
        first -= 1
    last = line
    while last < len(lines) and lines[last].strip().startswith(("import ", "from ")):
        last += 1
    return (any("#" in lines[i - 1] for i in range(first, last + 1))
            or lines[first - 2].strip().startswith("#"))


def deferred_imports(source: str) -> list[tuple[int, bool]]:
    """(line, commented) of each import inside a function: commented where it, its run of
    import lines or the line above the run holds a comment that says why it waits."""
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    out.append((inner.lineno, _commented(lines, inner.lineno)))
    return sorted(set(out))


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__init__"])
def test_each_module_imports(module):
    importlib.import_module(f"lift_mlx.{module}")


def test_the_package_has_no_import_cycle():
    graph = {m: imports_in(FILES[m].read_text(), m) - {m} for m in MODULES}
    assert graph["cli"] >= {"options", "store"}  # the parser sees what it must
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_imports_wait_inside_functions_rarely_and_say_why():
    deferred = {m: deferred_imports(FILES[m].read_text()) for m in MODULES}
    total = sum(len(found) for found in deferred.values())
    silent = [f"{FILES[m].relative_to(PACKAGE)}:{line}" for m, found in deferred.items()
              for line, said in found if not said]
    assert total < MAX_DEFERRED, deferred
    assert not silent, f"deferred imports without a comment saying why: {silent}"


def test_the_generation_stage_leaves_the_disk_to_the_store():
    """Generating QA pairs reads and writes no files: the QA cache's formats are
    synthesize's, writing them is the caller's (absorb, through store.write_atomic)."""
    for stage in ("synthesize", "generator_styles"):
        if stage in FILES:
            assert "store" not in imports_in(FILES[stage].read_text(), stage), stage


def test_imports_inside_functions_and_lazy_command_names_count():
    source = ("from . import __version__, store\nfrom .config import Settings\n"
              "from .adapters import LORA\nfrom .adapters.lora import LoRA\n"
              "def command():\n    from .cli import model_option\n"
              "    import lift_mlx.adapters.gated\n"
              "LAZY = {'eval': ('lift_mlx.cli:main', 'help')}\n")
    assert imports_in(source) == {"__init__", "store", "config", "cli", "adapters",
                                  "adapters.lora", "adapters.gated"}
    assert imports_in("from ..errors import LiftError\nfrom . import base\n",
                      "adapters.lora") == {"errors", "adapters.base"}
    assert imports_in("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from .config import Settings\n") == set()


def test_deferred_imports_are_found_with_their_reasons():
    source = ("import json\ndef f():\n    import mlx_lm  # slow\n"
              "def g():\n    # slow to import\n    from x import y\n    import z\n\n"
              "    import w\n")
    assert deferred_imports(source) == [(3, True), (6, True), (7, True), (9, False)]


def test_a_cycle_through_a_function_level_import_is_found():
    assert find_cycle({"cli": {"evaluate"}, "evaluate": {"judge"}, "judge": {"evaluate"}}) == [
        "evaluate", "judge", "evaluate"]
    assert find_cycle({"cli": {"options"}, "options": {"config"}, "config": set()}) is None
