"""The layout's rules, checked on the source: domain modules never import the web layer, and the
app's modules import each other without cycles (module-level imports; an import inside a
function is a deliberate late import and is not an edge)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB_SIDE = ("app.web", "app.main", "app.cli")  # the layers allowed to import app.web


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = (package or _module_name(path)).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _app_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (ROOT / "app").rglob("*.py")}
    return {
        name: {dep for dep in _top_level_imports(path) if dep in modules and dep != name}
        for name, path in modules.items()
    }


def test_domain_modules_never_import_the_web_layer() -> None:
    offenders = {
        name: sorted(dep for dep in deps if dep.startswith("app.web"))
        for name, deps in _app_graph().items()
        if not name.startswith(WEB_SIDE)
    }
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def test_app_modules_import_each_other_without_cycles() -> None:
    graph = _app_graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycles.append([*trail[trail.index(dep) :], dep] if dep in trail else [name, dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_graph_sees_real_imports() -> None:
    """Guards the two tests above against a parser that finds nothing."""
    graph = _app_graph()
    assert "app.methods" in graph["app.spec"]
    assert "app.spec" in graph["app.jobs"]
