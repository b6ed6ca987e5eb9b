"""The one local stack (xnovu/devtools/stack.py): it starts only what the settings do not point at, and stops in
reverse order with every step run even when an earlier one fails (the parts themselves are exercised by every
integration test, which runs on this stack)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xnovu.config import Settings
from xnovu.devtools.stack import LocalStack


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
