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
