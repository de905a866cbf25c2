"""The core's import graph: no cycles (imports inside functions included), no app imports."""

from __future__ import annotations

import ast
from pathlib import Path

import oscillink_core

ROOT = Path(oscillink_core.__file__).resolve().parent


def _graph() -> dict[str, set[str]]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent)
        if "app" in rel.parts:
            continue
        name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        mods[name] = p
    graph = {}
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module and target in mods:
                    deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods)
            elif isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                deps.update(n for n in names if n and n.startswith("oscillink_core") and n in mods)
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    found = set()
    for start in graph:
        if start == "oscillink_core":
            continue  # the package re-exports its modules: edges into it are not real dependencies
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for d in graph[node]:
                if d == start:
                    # a package importing its own submodules (tuning/__init__ -> tuning.search) is not a cycle
                    if not all(x.startswith(start) for x in path):
                        found.add(tuple(sorted(path)))
                elif d not in path and d != "oscillink_core":
                    stack.append((d, path + [d]))
    return found


def test_the_core_has_no_import_cycles():
    graph = _graph()
    assert {"oscillink_core.lattice", "oscillink_core._kernels", "oscillink_core.persistence"} <= set(graph)
    assert _cycles(graph) == set()


def test_the_seams_import_in_one_direction():
    g = _graph()
    assert "oscillink_core.lattice" not in g["oscillink_core.persistence"]
    assert not {"oscillink_core.api", "oscillink_core.lattice"} & (g["oscillink_core._backend"]
                                                                    | g["oscillink_core._kernels"])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == {("a", "b")}


def test_the_core_never_imports_the_app_layer():
    for p in ROOT.rglob("*.py"):
        if "app" in p.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(p.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith(("app", "oscillink_core.app")), p
                assert "app" not in [a.name for a in node.names] or node.level == 0, p
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("oscillink_core.app") for a in node.names), p
