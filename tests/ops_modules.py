"""Load a script module of ops/ (the fault suite, the soak) by path: ops/ is not a package, and each module is loaded
once under a fixed name so the runner and its tests share one copy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_ops_module(name: str, relative: str) -> ModuleType:
    """The module at ROOT/`relative`, registered as `name` in sys.modules (loaded on first use)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
