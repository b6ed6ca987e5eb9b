"""The one local stack (xnovu/devtools/stack.py): it starts only what the settings do not point at, and stops in
reverse order with every step run even when an earlier one fails (the parts themselves are exercised by every
integration test, which runs on this stack)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from xnovu.config import Settings
from xnovu.devtools.stack import LocalStack, child_environ


def test_settings_that_point_at_everything_start_nothing(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="postgresql://u@db.example:5432/x",
        temporal_address="temporal.example:7233",
        novu_api_url="https://api.novu.co",
        novu_secret_key="nv-key",
    )
    stack = LocalStack(settings, tmp_path / "stack")
    assert stack.start() == settings
    assert stack.postgres is None and stack.temporal is None and not stack.emulator_started
    stack.stop()


class _Part:
    def __init__(self, name: str, calls: list[str], fail: bool = False) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    def __call__(self, *_: Any) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} would not stop")


class _Fake:
    def __init__(self, **methods: _Part) -> None:
        self.__dict__.update(methods)


def test_stop_goes_in_reverse_order_and_runs_every_step_when_one_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    stack = LocalStack.everything(tmp_path)
    stack.emulator_process = _Fake(stop=_Part("emulator", calls, fail=True))  # type: ignore[assignment]
    stack.temporal = _Fake(stop=_Part("temporal", calls, fail=True))  # type: ignore[assignment]
    stack.postgres = _Fake(close=_Part("postgres", calls))  # type: ignore[assignment]
    stack.stop()
    assert calls == ["emulator", "temporal", "postgres"]
    assert "stopping the local emulator failed" in caplog.text
    assert "stopping the local Temporal failed" in caplog.text


def test_a_part_that_fails_to_start_stops_the_parts_already_started(tmp_path: Path) -> None:
    calls: list[str] = []
    stack = LocalStack.everything(tmp_path)

    def broken_start() -> Settings:
        stack.postgres = _Fake(close=_Part("postgres", calls))  # type: ignore[assignment]
        raise RuntimeError("Temporal would not start")

    stack._start = broken_start  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="Temporal would not start"):
        stack.start()
    assert calls == ["postgres"]


def test_a_child_environment_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker subprocess must see exactly the bench's settings, secrets included, and nothing stale."""
    original = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=SecretStr("postgresql://u:pw@127.0.0.1:5/db"),
        novu_secret_key=SecretStr("k-123456"),
        poll_interval_ms=1000,
        novu_rate_limit_rps=1e6,
        temporal_task_queue="tq-bench",
    )
    monkeypatch.setenv("POLL_ENTERPRISE_ID", "00000000-0000-0000-0000-000000000001")  # stale, must be dropped
    env = child_environ(original)
    assert "POLL_ENTERPRISE_ID" not in env
    for name in Settings.model_fields:  # the child process gets `env` as its whole environment
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rebuilt = Settings(_env_file=None)  # type: ignore[call-arg]
    assert rebuilt.model_dump() == original.model_dump()
    assert rebuilt.novu_secret_key is not None and rebuilt.novu_secret_key.get_secret_value() == "k-123456"
