"""The per-notification workflows run outside Temporal's sandbox (xnovu/temporal/workflows.py explains why), so
what the sandbox would catch at run time is caught here, in their source, before it ships.

A workflow must behave the same when Temporal replays it: no wall clock, randomness, environment, I/O or shared
mutable state. The checks read the module's syntax tree, so they hold for any change to the workflow code.
"""

from __future__ import annotations

import ast
import inspect

import pytest

from xnovu.temporal import workflows

#: Modules whose use inside workflow code makes a replay differ from the original run.
FORBIDDEN_MODULES = {
    "time", "random", "uuid", "os", "socket", "threading", "subprocess", "secrets",
    "httpx", "asyncpg", "logging", "pathlib", "shutil", "tempfile",
}  # fmt: skip
#: Calls that read the clock or the outside world even through an allowed module.
FORBIDDEN_CALLS = {"now", "utcnow", "today", "open", "print", "input", "getenv"}
UNSANDBOXED = [workflows.NotificationTriggerWorkflow, workflows.PollNotificationsWorkflow]


def _tree() -> ast.Module:
    return ast.parse(inspect.getsource(workflows))


def _imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_hot_workflows_really_run_outside_the_sandbox() -> None:
    """The measured saving only exists while both stay unsandboxed (docs/performance.md)."""
    for cls in UNSANDBOXED:
        defn = getattr(cls, "__temporal_workflow_definition")
        assert defn.sandboxed is False, f"{cls.__name__} is sandboxed again: update docs/performance.md"


def test_workflow_module_imports_nothing_non_deterministic() -> None:
    used = _imported_modules(_tree()) & FORBIDDEN_MODULES
    assert not used, f"xnovu/temporal/workflows.py imports {sorted(used)}: workflow code must stay deterministic"


def _problems(tree: ast.AST) -> list[str]:
    """Clock reads, I/O, forbidden modules and global state in a piece of workflow code."""
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if name in FORBIDDEN_CALLS and owner != "workflow":
                problems.append(f"line {node.lineno}: {ast.unparse(func)}()")
        elif isinstance(node, ast.Global | ast.Nonlocal):
            problems.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_MODULES:
            problems.append(f"line {node.lineno}: uses {node.id}")
    return problems


@pytest.mark.parametrize("cls", UNSANDBOXED, ids=lambda c: c.__name__)
def test_workflow_code_calls_no_clock_no_io_and_keeps_no_global_state(cls: type) -> None:
    problems = _problems(ast.parse(inspect.getsource(cls).strip()))
    assert not problems, f"{cls.__name__} is not replay-safe: {problems}"


def test_the_checks_catch_what_they_are_for() -> None:
    """Workflow code that reads the wall clock, draws randomness or keeps global state is reported."""
    bad = ast.parse(
        "import time\n"
        "class W:\n"
        "    async def run(self):\n"
        "        global seen\n"
        "        return datetime.now(), time.time(), random.random(), workflow.now()\n"
    )
    assert _imported_modules(bad) & FORBIDDEN_MODULES == {"time"}
    found = " ".join(_problems(bad))
    assert "datetime.now()" in found and "uses time" in found and "uses random" in found and "global" in found
    assert "workflow.now" not in found, "workflow.now() is Temporal's deterministic clock"
