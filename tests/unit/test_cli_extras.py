"""A lean install (`pip install xnovu`, the Docker image) has no local stack: `xnovu dev` and `xnovu bench` then
say in one line what to install (pyproject.toml extra `embedded`), run in process with the module made missing."""

from __future__ import annotations

import sys

import pytest

from xnovu.cli import run_main


@pytest.mark.parametrize("missing", ["pgserver", "psutil"])
@pytest.mark.parametrize("command", ["dev", "bench"])
def test_without_the_embedded_extra_the_command_says_in_one_line_what_to_install(
    command: str, missing: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # `import pgserver` now fails as if it were not installed
    monkeypatch.setattr(sys, "argv", ["xnovu", command])
    assert run_main() == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "pip install 'xnovu[embedded]'" in err and missing in err and f"xnovu {command}" in err


def test_with_the_extra_installed_the_check_passes() -> None:
    from xnovu.cli import require_embedded

    require_embedded("dev")


def test_worker_health_shows_the_due_backlog_by_urgency_and_by_enterprise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/priority.md "Operating it": `xnovu worker health` shows what /status says is due."""
    from typing import Any

    from xnovu.worker import process

    status: dict[str, Any] = {
        "version": "x",
        "due": {
            "by_urgency": {"2": {"due": 3, "oldest_s": 95.2}, "0": {"due": 40, "oldest_s": 12.0}},
            "by_enterprise": {"aaaaaaaa-0000-4000-8000-000000000001": {"due": 40, "oldest_s": 12.0}},
            "highest_urgency": 2,
            "urgent_oldest_s": 95.2,
            "capped": False,
        },
        "fleet": {"workers": 3, "workflow_slots": 150, "unseen": 1, "rows_window": 300},
    }
    monkeypatch.setattr(process, "fetch_health", lambda s: (True, {"status": "ok"}, status))
    # The console is built when xnovu.cli is first imported, so COLUMNS set here came too late whenever another test
    # imported it first (with two pytest processes, the order differs): the width is set on the console itself.
    from xnovu import cli

    monkeypatch.setattr(cli.out, "width", 200)
    monkeypatch.setattr(sys, "argv", ["xnovu", "worker", "health"])
    assert run_main() == 0
    out = capsys.readouterr().out
    assert "due by urgency" in out and "2: 3 oldest 95 s, 0: 40 oldest 12 s" in out
    assert "due by enterprise" in out and "aaaaaaaa-0000-4000-8000-000000000001: 40 oldest 12 s" in out
    assert "3 workers, 150 workflow slots, 1 unseen: 300 rows in flight per class at most" in out
