"""`xnovu emulator` reads only its own settings: a worker variable that is empty or invalid does not stop it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from tests.e2e.conftest import start_xnovu
from tests.support import eventually
from xnovu.config import Settings
from xnovu.devtools.stack import free_port


async def test_the_emulator_starts_when_worker_settings_are_empty_or_invalid(tmp_path: Path) -> None:
    port = free_port()
    worker_only = {"NOVU_API_URL": "", "POLL_INTERVAL_MS": "not-a-number", "DATABASE_URL": "mysql://nope"}
    proc = await start_xnovu(
        Settings.model_construct(), "emulator", "--port", str(port), cwd=tmp_path, env=worker_only
    )
    try:

        async def healthy() -> bool:
            if proc.returncode is not None:
                _, err = await proc.communicate()
                raise AssertionError(f"the emulator exited with {proc.returncode}: {err.decode()!r}")
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"http://127.0.0.1:{port}/emulator/health")).status_code == 200
            except httpx.HTTPError:
                return False

        assert await eventually(healthy, timeout=30)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
