"""The package's shape: no import cycle between modules, and none between its packages (rooms).

Every import counts, including those inside functions (a lazy import still makes two modules depend
on each other; it only hides the cycle from Python's loader)."""

import ast
import importlib.util
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ifprune"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in files else target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def room(mod: str) -> str:
    """The package a module lives in; the root's own modules (cli, __init__) are the room 'ifprune'."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (SRC / parts[1]).is_dir()) else "ifprune"


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages():
    rooms: dict[str, set[str]] = {}
    for mod, deps in import_graph().items():
        rooms.setdefault(room(mod), set()).update(room(d) for d in deps if room(d) != room(mod))
    cycle = find_cycle(rooms)
    assert cycle is None, "packages depend on each other: " + " -> ".join(cycle)


def test_core_depends_on_nothing_else_in_ifprune():
    outside = {(m, d) for m, deps in import_graph().items() if room(m) == "core" for d in deps if room(d) != "core"}
    assert not outside, outside


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", ["core", "compensation", "selection", "runtime", "export", "compress", "bench",
                                  "training", "eval", "serve", "commands"])
def test_every_package_says_what_it_owns(name):
    doc = ast.get_docstring(ast.parse((SRC / name / "__init__.py").read_text()))
    assert doc and len(doc) > 30, f"{name}/__init__.py needs a docstring saying what the package owns"


def test_scripts_outside_the_package_import_what_exists():
    """benchmarks/ scripts are not imported by the suite; a moved module must not break them."""
    import importlib

    root = SRC.parents[1]
    missing = []
    for path in sorted(root.glob("benchmarks/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ifprune"):
                try:
                    mod = importlib.import_module(node.module)
                except ImportError as e:
                    missing.append(f"{path.relative_to(root)}: {node.module} ({e})")
                    continue
                missing += [f"{path.relative_to(root)}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(mod, a.name) and not importlib.util.find_spec(f"{node.module}.{a.name}")]
    assert not missing, missing


def test_results_hold_outputs_not_code():
    """Code that measures lives in benchmarks/ (one script per experiment family); a results folder holds what it
    wrote and its README the commands, so a fix to a benchmark reaches every result it re-derives."""
    root = SRC.parents[1]
    code = sorted(str(p.relative_to(root)) for ext in ("py", "sh") for p in (root / "results").rglob(f"*.{ext}"))
    assert not code, f"scripts under results/ belong in benchmarks/ (or as commands in the folder's README): {code}"
