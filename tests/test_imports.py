"""The package's modules import on their own and import each other without a cycle, counting
imports inside functions too (a function-level import only hides a cycle until it runs)."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import lift_mlx

PACKAGE = Path(lift_mlx.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
# "lift_mlx.MODULE:attribute" strings name modules imported by name (the CLI's lazy commands)
NAMED = re.compile(r"lift_mlx\.(\w+)(:\w+)?")


def imports_in(source: str) -> set[str]:
    """The lift_mlx modules a module's source imports anywhere in its code; `from . import
    NAME` of a name that is no module reads the package itself (__init__)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found |= {a.name if a.name in MODULES else "__init__" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lift_mlx"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("lift_mlx.")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if m := NAMED.fullmatch(node.value):
                found.add(m.group(1))
    return {m for m in found if m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that ends where it starts, or None."""
    state = {}  # module -> "open" while on the path, "done" once all it reaches is checked

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph[module]):
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


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__init__"])
def test_each_module_imports(module):
    importlib.import_module(f"lift_mlx.{module}")


def test_the_package_has_no_import_cycle():
    graph = {m: imports_in((PACKAGE / f"{m}.py").read_text()) - {m} for m in MODULES}
    assert graph["cli"] >= {"options", "evaluate", "server"}  # the parser sees what it must
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_generation_stage_leaves_the_disk_to_the_store():
    """Generating QA pairs reads and writes no files: the QA cache's formats are
    synthesize's, writing them is the caller's (absorb, through store.write_atomic)."""
    for stage in ("synthesize", "generator_styles"):
        assert "store" not in imports_in((PACKAGE / f"{stage}.py").read_text()), stage


def test_imports_inside_functions_and_lazy_command_names_count():
    source = ("from . import __version__, store\nfrom .config import Settings\n"
              "def command():\n    from .cli import model_option\n"
              "    import lift_mlx.judge\n"
              "LAZY = {'eval': ('lift_mlx.evaluate:eval_command', 'help')}\n")
    assert imports_in(source) == {"__init__", "store", "config", "cli", "judge", "evaluate"}


def test_a_cycle_through_a_function_level_import_is_found():
    assert find_cycle({"cli": {"evaluate"}, "evaluate": {"judge"}, "judge": {"evaluate"}}) == [
        "evaluate", "judge", "evaluate"]
    assert find_cycle({"cli": {"options"}, "options": {"config"}, "config": set()}) is None
