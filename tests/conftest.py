"""Fixtures: the session-wide embedded stack (real Postgres, real Temporal dev server, real HTTP emulator)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import Env, Stack, environment, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def env(stack: Stack) -> AsyncIterator[Env]:
    async with environment(stack) as e:
        yield e
