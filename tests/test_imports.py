"""Which parts of xraycnn import which, read from the source: the parts stand in layers, each importing only
the layers below it (and itself), so there is no cycle and no upward import. A new upward import fails here;
where a lower part needs something of a higher one, it is handed in (the hypermodel's epoch guards are set by
evaluation's TrialScorer) or the code moves down."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "xraycnn"
BASE = {"errors", "paths", "regions", "site_request", "__version__"}  # modules every layer may import
# From the bottom up: the experiment file's config, then data -> model -> tuning -> evaluation -> tracking ->
# serving -> registry (and the report beside it) -> jobs -> the command line. The package's own __init__ (its
# public `prepare_images`) and __main__ stand on top.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer)
    for layer in (
        {"errors", "__version__"},
        BASE - {"errors", "__version__"},
        {"config", "runtime"},
        {"data"},
        {"model"},
        {"tuning"},
        {"evaluation"},
        {"tracking"},
        {"serving"},
        {"registry", "report"},
        {"jobs"},
        {"cli"},
        {"__init__", "__main__"},
    )
)


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "xraycnn"


def import_graph() -> dict[str, set[str]]:
    """Part -> the other parts it imports (module level or inside functions)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        here = _part(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xraycnn":
                names = [f"xraycnn.{n.name}" for n in node.names] if node.module == "xraycnn" else [node.module]
            elif isinstance(node, ast.Import):
                names = [n.name for n in node.names if n.name.split(".")[0] == "xraycnn"]
            else:
                continue
            for name in names:
                there = _part(name)
                if there not in (here, "xraycnn"):
                    graph[here].add(there)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def level(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import of a part from its own layer or one above it."""
    return sorted((here, there) for here, theirs in graph.items() for there in theirs if level(there) >= level(here))


def test_every_part_is_in_a_layer() -> None:
    graph = import_graph()
    parts = {
        p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    missing = (parts | set(graph) | {w for ws in graph.values() for w in ws}) - {"__version__"} - set().union(*LAYERS)
    assert not missing, f"put {sorted(missing)} in a layer of LAYERS"


def test_every_part_imports_only_the_layers_below_it() -> None:
    graph = import_graph()
    assert upward(graph) == [], upward(graph)
    assert cycles(graph) == []


def test_the_checkers_find_a_cycle_and_an_upward_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert upward({"model": {"evaluation", "data"}, "jobs": {"tracking"}}) == [("model", "evaluation")]
    assert upward({"config": {"runtime"}}) == [("config", "runtime")]  # the same layer counts as upward
    graph = import_graph()
    graph["model"].add("evaluation")  # the import the trial scoring once made
    assert ("model", "evaluation") in upward(graph)
