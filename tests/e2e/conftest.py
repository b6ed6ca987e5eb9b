"""End-to-end helpers: run the real `xnovu` command line in a subprocess against the per-test environment.

The subprocess gets its configuration only from environment variables built from `env.settings` (upper-case field
names, as a user would set them) and runs in an empty temporary folder, so no developer `.env` is read. It is started
with `asyncio.create_subprocess_exec`, so the session event loop keeps serving an in-process worker meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import DB_PASSWORD, NOVU_SECRET, Env
from xnovu.config import Settings

#: The recognisable fake secrets of the test stack (I6): never in any output we capture.
SECRETS = (NOVU_SECRET, DB_PASSWORD)

#: Every variable xnovu reads; stripped from the inherited environment so only what a test sets is seen.
_SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
#: Also unset: a terminal size (rich would wrap differently from a real pipe) and the traceback switch.
_UNSET = {"COLUMNS", "LINES", "XNOVU_DEBUG"}


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """`settings` as the environment variables a user would set (None skipped); `overrides` win (None unsets)."""
    return settings.to_environ(**overrides)


@dataclass
class Result:
    """What one `xnovu` invocation did."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __iter__(self) -> Any:  # `rc, out, err = await cli(...)`
        return iter((self.returncode, self.stdout, self.stderr))

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"`xnovu {' '.join(self.args)}` did not print JSON: {self!r}") from exc

    def ok(self) -> Result:
        """Assert exit 0 (with everything printed in the message otherwise); returns self for chaining."""
        assert self.returncode == 0, f"`xnovu {' '.join(self.args)}` failed: {self!r}"
        return self

    def error_line(self) -> str:
        """Assert a failure that is exactly one readable line on stderr; returns that line."""
        assert self.returncode == 1, f"`xnovu {' '.join(self.args)}` should exit 1: {self!r}"
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"stderr should be one line, got {len(lines)}: {self.stderr!r}"
        assert "Traceback" not in self.stderr
        return lines[0]


def assert_no_secret(text: str, secrets: tuple[str, ...] = SECRETS, where: str = "output") -> None:
    for secret in secrets:
        assert secret not in text, f"secret {secret[:6]}… leaked in {where}: {text!r}"


def subprocess_env(settings: Settings, env: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The inherited environment without any xnovu variable, plus `settings` (and `env`) as variables."""
    environ = {k: v for k, v in os.environ.items() if k not in _SETTINGS_VARS and k not in _UNSET}
    environ.update(settings_env(settings, **(env or {})))
    return environ


async def start_xnovu(
    settings: Settings, *args: str, cwd: Path, env: Mapping[str, Any] | None = None
) -> asyncio.subprocess.Process:
    """Start `python -m xnovu ARGS` (stdout/stderr piped) and return the process without waiting for it."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xnovu",
        *args,
        cwd=cwd,
        env=subprocess_env(settings, env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_xnovu(
    settings: Settings,
    *args: str,
    cwd: Path,
    timeout: float = 60.0,
    env: Mapping[str, Any] | None = None,
) -> Result:
    """Run `python -m xnovu ARGS` with `settings` as environment variables, in `cwd`; never blocks the loop."""
    proc = await start_xnovu(settings, *args, cwd=cwd, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"`xnovu {' '.join(args)}` did not finish within {timeout} s; stdout={out!r} stderr={err!r}"
        ) from None
    assert proc.returncode is not None
    return Result(tuple(args), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


@dataclass
class Cli:
    """`await cli("doctor", "--json")` runs xnovu against one environment; every output is checked for secrets."""

    settings: Settings
    cwd: Path
    results: list[Result] = field(default_factory=list)
    extra_secrets: tuple[str, ...] = ()

    async def __call__(self, *args: Any, timeout: float = 60.0, env: Mapping[str, Any] | None = None) -> Result:
        result = await run_xnovu(self.settings, *map(str, args), cwd=self.cwd, timeout=timeout, env=env)
        self.results.append(result)
        assert_no_secret(
            result.stdout + result.stderr, SECRETS + self.extra_secrets, f"`xnovu {' '.join(result.args)}`"
        )
        return result

    async def json(self, *args: Any, **kw: Any) -> Any:
        return (await self(*args, "--json", **kw)).ok().json()


@pytest.fixture
def cli(env: Env, tmp_path: Path) -> Cli:
    """The command line bound to this test's environment, run from an empty folder (no stray `.env`)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return Cli(env.settings, cwd)
