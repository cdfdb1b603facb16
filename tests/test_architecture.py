"""The layers point down: the core names no application, no application imports the CLI, and no
package (nor any module inside recsys) sits on an import cycle. Read from the source with ``ast``,
so lazy imports inside functions count too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core_rl", "recsys", "autotune", "safety", "pipelines")
APPS = ("recsys", "autotune", "safety")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


def _graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for pkg in packages:
        for path in (REPO / pkg).rglob("*.py"):
            graph[_module_name(path)] |= _imports(path)
    return graph


def _strings(path: Path) -> list[str]:
    return [
        n.value
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_core_names_no_application_not_even_by_string():
    for path in (REPO / "core_rl").rglob("*.py"):
        top = {m.split(".")[0] for m in _imports(path)}
        assert not top & set(APPS + ("pipelines",)), f"{path.relative_to(REPO)} imports {top & set(APPS)}"
        for text in _strings(path):
            for app in APPS + ("pipelines",):
                assert not text.startswith((f"{app}.", f"{app}:", f"{app}/")), (
                    f"{path.relative_to(REPO)} names '{text}'"
                )


@pytest.mark.parametrize("app", APPS)
def test_no_application_imports_the_cli_layer(app):
    for path in (REPO / app).rglob("*.py"):
        assert "pipelines" not in {m.split(".")[0] for m in _imports(path)}, (
            f"{path.relative_to(REPO)} imports pipelines"
        )


def test_top_level_packages_form_no_cycle():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, imported in _graph(PACKAGES).items():
        src = module.split(".")[0]
        edges[src] |= {m.split(".")[0] for m in imported if m.split(".")[0] in PACKAGES and m.split(".")[0] != src}
    assert _find_cycle(edges) is None, _find_cycle(edges)
    assert "pipelines" not in set().union(*(edges[p] for p in PACKAGES if p != "pipelines"))


def test_recsys_modules_form_no_import_cycle():
    graph = _graph(("recsys",))
    modules = set(graph)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {
        m: {r for i in imported if (r := resolve(i)) and r != m and not m.startswith(r + ".") and r != "recsys"}
        for m, imported in graph.items()
    }
    assert _find_cycle(edges) is None, " -> ".join(_find_cycle(edges) or [])


def test_apps_reach_the_registry_as_plugins():
    from core_rl.registry import ALGORITHMS, load_plugins

    assert set(load_plugins()) >= {"safety.registration", "recsys.registration"}
    assert ALGORITHMS["ppo_lag"].cls.__module__.startswith("safety.")
    assert ALGORITHMS["slateq"].cls.__module__.startswith("recsys.")
