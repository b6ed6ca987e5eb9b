"""Every structured log call's `extra` keys are free: logging raises KeyError for a LogRecord attribute.

The error only shows when the level lets the record be made (INFO in `xnovu dev`, WARNING in the tests), so it is
checked on the source, for every literal `extra={...}` in the package.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "xnovu"
RESERVED = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {"message", "asctime"}


def test_no_log_call_passes_a_logrecord_attribute_in_extra() -> None:
    clashes = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                    keys = [k.value for k in kw.value.keys if isinstance(k, ast.Constant)]
                    clashes += [f"{path.relative_to(PACKAGE)}:{node.lineno} {k!r}" for k in keys if k in RESERVED]
    assert not clashes, clashes


def test_the_check_knows_the_attribute_that_broke_the_rules_sync() -> None:
    assert "created" in RESERVED and "schedules_created" not in RESERVED
