"""The package's layering, read from the source: no import cycle anywhere, between modules or between the folders
that hold them, each layer imports only below it, and xnovu/core, the domain, imports no other layer.

The graph holds every `import` in `xnovu/`: at module level, inside functions (a lazy import is still a dependency)
and under `if TYPE_CHECKING:` (a type-only cycle is still two modules that each need the other). The one exception is
the root package's re-export block: `xnovu/__init__.py` resolves those names lazily in `__getattr__`, so the face of
the package does not make every module that reads `xnovu.__version__` depend on everything. README "Development"
draws the layers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "xnovu"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _nodes(tree: ast.AST, *, skip_type_checking: bool) -> list[ast.AST]:
    """Every node of the tree, without the bodies of `if TYPE_CHECKING:` blocks when asked."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if skip_type_checking and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def imports_of(name: str) -> set[str]:
    """The xnovu modules `name` imports (a `from package import module` counts as the module)."""
    path = MODULES[name]
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _nodes(tree, skip_type_checking=name == "xnovu"):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES else origin for alias in node.names
            ]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def outside_imports_of(name: str) -> set[str]:
    """The top-level names of what `name` imports from outside xnovu (stdlib or third party), at any depth."""
    found: set[str] = set()
    for node in _nodes(ast.parse(MODULES[name].read_text(encoding="utf-8")), skip_type_checking=False):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"xnovu"}


def folder_of(name: str) -> str:
    """The unit of xnovu a module belongs to: its folder right under xnovu/ (xnovu.core.models → xnovu.core), or
    the module itself when it sits at the top (xnovu.config)."""
    return ".".join(name.split(".")[:2])


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed to folders: core → db when any module of core imports any module of db."""
    folders: dict[str, set[str]] = {}
    for name, targets in graph.items():
        edges = folders.setdefault(folder_of(name), set())
        edges |= {folder_of(t) for t in targets} - {folder_of(name)}
    return folders


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_from_every_module() -> None:
    assert "xnovu.worker.composition" in GRAPH
    assert "xnovu.service.processor" in GRAPH["xnovu.worker.composition"]
    # A function-level import counts: the CLI imports its commands' modules lazily.
    assert "xnovu.worker.doctor" in GRAPH["xnovu.cli"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_anywhere_in_the_package() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_the_folder_graph_finds_a_cycle_the_module_graph_does_not() -> None:
    """What issue 18 found: core/processor.py imported db/repository.py, which imported core/models.py. No module
    imported itself back, yet core and db each needed the other, so neither was a layer."""
    graph = {
        "xnovu.core.processor": {"xnovu.db.repository"},
        "xnovu.db.repository": {"xnovu.core.models"},
        "xnovu.core.models": set(),
    }
    assert find_cycle(graph) is None
    assert find_cycle(folder_graph(graph)) == ["xnovu.core", "xnovu.db", "xnovu.core"]
    # Through a top-level module too: config → core → db → config.
    graph = {
        "xnovu.config": {"xnovu.core.weights"},
        "xnovu.core.rules": {"xnovu.db.rules"},
        "xnovu.db.rules": {"xnovu.config"},
    }
    assert find_cycle(folder_graph(graph)) == ["xnovu.config", "xnovu.core", "xnovu.db", "xnovu.config"]
    assert find_cycle(folder_graph({"xnovu.service.processor": {"xnovu.db.repository", "xnovu.core.models"}})) is None


def test_no_import_cycle_between_folders() -> None:
    folders = folder_graph(GRAPH)
    assert find_cycle(folders) is None, " -> ".join(find_cycle(folders) or [])
    assert {"xnovu.core", "xnovu.db", "xnovu.config"} <= folders.keys()


#: What xnovu/core may import of xnovu besides itself: its exception types only.
CORE_MAY_IMPORT = ("xnovu.core", "xnovu.errors")
#: Third-party libraries xnovu/core may import: none. Its dataclasses cross Temporal through the default converter,
#: which needs no pydantic; it is imported inside the workflow sandbox and by every layer, settings included; and its
#: logic is unit-tested with nothing installed. A pure library could be added here, never a driver or a client.
CORE_MAY_IMPORT_THIRD_PARTY: frozenset[str] = frozenset()


def impure_core_imports(graph: dict[str, set[str]], outside: dict[str, set[str]]) -> list[str]:
    """What a module of xnovu/core imports beyond CORE_MAY_IMPORT, the standard library and the pure libraries."""
    core = [name for name in graph if name == "xnovu.core" or name.startswith("xnovu.core.")]
    return sorted(
        [
            f"{name} imports {t}"
            for name in core
            for t in graph[name]
            if not any(t == ok or t.startswith(ok + ".") for ok in CORE_MAY_IMPORT)
        ]
        + [
            f"{name} imports {t}"
            for name in core
            for t in outside.get(name, set())
            if t not in sys.stdlib_module_names and t not in CORE_MAY_IMPORT_THIRD_PARTY
        ]
    )


def test_the_core_check_finds_an_impure_import() -> None:
    graph = {
        "xnovu.core.processor": {"xnovu.core.models", "xnovu.db.repository", "xnovu.errors"},
        "xnovu.core.models": set(),
        "xnovu.db.repository": {"xnovu.core.models"},
    }
    outside = {"xnovu.core.models": {"dataclasses", "pydantic"}, "xnovu.db.repository": {"asyncpg"}}
    assert impure_core_imports(graph, outside) == [
        "xnovu.core.models imports pydantic",
        "xnovu.core.processor imports xnovu.db.repository",
    ]


def test_the_core_imports_nothing_of_xnovu_but_its_errors_and_only_the_standard_library() -> None:
    core = [name for name in MODULES if name.startswith("xnovu.core")]
    assert {"xnovu.core.models", "xnovu.core.rules", "xnovu.core.fairshare"} <= set(core)
    assert impure_core_imports(GRAPH, {name: outside_imports_of(name) for name in core}) == []


def test_the_processor_keeps_a_stable_import_path() -> None:
    """It left xnovu.core.processor (issue 18); `from xnovu import NotificationProcessor` and xnovu.api name it."""
    import xnovu
    from xnovu import api
    from xnovu.service.processor import NotificationProcessor

    assert xnovu.NotificationProcessor is api.NotificationProcessor is NotificationProcessor


def _violations(importer_prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name == importer_prefix or name.startswith(importer_prefix + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    )


LAYERS = [
    # (layer, what it must never import)
    # xnovu.core imports none of them, nor config, logs, metrics or tracing (the stricter check above).
    ("xnovu.core", ("xnovu.db", "xnovu.novu", "xnovu.service", "xnovu.temporal", "xnovu.worker", "xnovu.devtools")),
    ("xnovu.db", ("xnovu.service", "xnovu.temporal", "xnovu.worker", "xnovu.devtools", "xnovu.cli", "xnovu.api")),
    (
        "xnovu.novu",
        ("xnovu.core", "xnovu.db", "xnovu.service", "xnovu.temporal", "xnovu.worker", "xnovu.devtools", "xnovu.cli"),
    ),
    ("xnovu.service", ("xnovu.temporal", "xnovu.worker", "xnovu.devtools", "xnovu.cli", "xnovu.api")),
    ("xnovu.temporal", ("xnovu.worker", "xnovu.devtools", "xnovu.cli", "xnovu.api")),
    ("xnovu.worker", ("xnovu.devtools", "xnovu.cli", "xnovu.api")),
    ("xnovu.api", ("xnovu.worker", "xnovu.devtools", "xnovu.cli")),
]


@pytest.mark.parametrize(("layer", "forbidden"), LAYERS, ids=[layer for layer, _ in LAYERS])
def test_each_layer_imports_only_below_it(layer: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(layer, forbidden) == []


def test_production_code_never_imports_the_development_tools() -> None:
    """Only the CLI's `dev`, `emulator` and `bench` commands reach into xnovu.devtools (installed with [dev])."""
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if not name.startswith("xnovu.devtools") and name != "xnovu.cli"
        for target in targets
        if target.startswith("xnovu.devtools")
    )
    assert offenders == []


def test_cross_cutting_modules_import_no_layer() -> None:
    """config, errors, logs, metrics and tracing are used by every layer, so they import none of them."""
    cross = ["xnovu.config", "xnovu.errors", "xnovu.logs", "xnovu.metrics", "xnovu.tracing"]
    layers = (
        "xnovu.temporal", "xnovu.worker", "xnovu.devtools", "xnovu.cli", "xnovu.api", "xnovu.db", "xnovu.novu",
        "xnovu.service",
    )  # fmt: skip
    assert [f"{m} imports {t}" for m in cross for t in GRAPH[m] if t.startswith(layers)] == []


def test_the_bench_plan_is_pure() -> None:
    """Its arithmetic is unit-tested without a stack: it imports no other xnovu module."""
    assert GRAPH["xnovu.devtools.bench.plan"] == set()
    assert GRAPH["xnovu.devtools.bench.render"] == {"xnovu.devtools.bench.plan"}
