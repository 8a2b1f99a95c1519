"""The package's import graph (ARCHITECTURE.md): no import loops, and no layer imports a layer above it.

Every import counts, also those inside functions (a lazy import is still a
dependency), resolved to the module it names.
"""

import ast
import os
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: the layers, lowest first; a module belongs to the layer of its longest matching prefix
LAYERS = [
    ["lossbench._version", "lossbench.errors", "lossbench.registry", "lossbench.contract"],
    ["lossbench.config"],
    ["lossbench.data"],
    ["lossbench.models"],
    ["lossbench.losses"],
    ["lossbench.plugins"],
    ["lossbench.metrics", "lossbench.plots"],
    ["lossbench.engine"],
    ["lossbench.experiments"],
    ["lossbench.api", "lossbench.cli", "lossbench.__main__", "lossbench"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (SRC / "lossbench").rglob("*.py")}


def imports(name: str) -> set[str]:
    """The lossbench modules ``name`` imports (``from a import b`` names module a.b when it is one)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import"
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> int:
    matches = [(len(prefix), i) for i, group in enumerate(LAYERS) for prefix in group
               if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{name} is in no layer of ARCHITECTURE.md; add it to LAYERS"
    return max(matches)[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each an import loop."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back_through_others():
    assert cycles(GRAPH) == []


def test_no_layer_imports_a_layer_above_it():
    upward = [f"{a} -> {b}" for a, targets in sorted(GRAPH.items()) for b in sorted(targets) if layer(b) > layer(a)]
    assert upward == []


def test_the_checks_see_a_loop_and_an_upward_import():
    """The two checks above can fail: a made-up loop is found, and data importing the engine is upward."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("lossbench.engine.fit") > layer("lossbench.data.formats.folder")
    assert "lossbench.data.registry" in GRAPH["lossbench.data.formats.folder"]


ROOT = SRC.parent
#: a line git leaves in a file when a merge conflict was committed unresolved
CONFLICT_LINE = ("<<<<<<< ", "=======\n", ">>>>>>> ")


def conflict_lines(text: str) -> list[int]:
    """1-based numbers of the lines that are merge-conflict markers."""
    return [i for i, line in enumerate(text.splitlines(keepends=True), 1)
            if line.startswith(CONFLICT_LINE) or line == "======="]


def text_files(root: Path):
    """The repository's code, docs, recipes and settings, not descending into hidden folders or outputs."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"runs", "build", "dist", "node_modules"}]
        for name in files:
            if Path(name).suffix in {".md", ".py", ".yaml", ".yml", ".toml", ".cfg"} or name == "Makefile":
                yield Path(folder) / name


def test_no_committed_merge_conflict_in_code_docs_or_recipes():
    files = sorted(text_files(ROOT))
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files for n in conflict_lines(p.read_text(errors="replace"))]
    assert len(files) > 100 and found == []


def test_the_conflict_check_sees_a_conflict():
    assert conflict_lines("a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> other\n") == [2, 4, 6]
    assert conflict_lines("# ======= a heading rule\nx = 1\n") == []
