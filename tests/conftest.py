"""Fixtures: the session-wide embedded stack (real Postgres, real Temporal dev server, real HTTP emulator)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.otlp import OtlpReceiver
from tests.support import Env, Stack, environment, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def env(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    fresh = request.node.get_closest_marker("fresh_namespace") is not None
    async with environment(stack, fresh_namespace=fresh) as e:
        yield e


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A local OTLP/HTTP receiver for the tracing tests."""
    r = OtlpReceiver().start()
    try:
        yield r
    finally:
        r.stop()
