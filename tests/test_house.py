"""The structure of the house: apps import libraries and never each other, nothing below the apps imports an
app, and robolearn's modules import one another without a circle."""

import ast
from pathlib import Path

import robolearn

ROOT = Path(robolearn.__file__).parent
#: the app modules: one per `robolearn <command>` (cli dispatches to them)
APPS = {"robolearn.train", "robolearn.evaluate", "robolearn.collect", "robolearn.finetune", "robolearn.train_value",
        "robolearn.deploy", "robolearn.record", "robolearn.replay", "robolearn.calibrate", "robolearn.sysid",
        "robolearn.convert"}
DISPATCHERS = {"robolearn.cli", "robolearn.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """{module: the robolearn modules it imports anywhere in its body}."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_apps_import_libraries_only_and_libraries_never_import_apps():
    graph = imports()
    for module, targets in graph.items():
        if module in DISPATCHERS:
            continue
        bad = targets & APPS
        assert not bad, f"{module} imports the app(s) {sorted(bad)}"


def test_no_import_circle():
    graph = {m: {t for t in ts if not (m in DISPATCHERS or t in DISPATCHERS)} for m, ts in imports().items()}
    # a package imports its submodules through __init__; the circle package -> submodule -> package is not one
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
