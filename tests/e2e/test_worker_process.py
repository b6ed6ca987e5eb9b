"""The worker process through the command line (README "Command line", "Operations"; I6 of docs/design.md): detached
start/status/health/restart/stop with a pid file, the health server's endpoints, a real send by the detached worker, a
graceful foreground SIGTERM, and no secret in anything the worker or the CLI printed.

One detached worker (module fixture) serves the tests in file order; the last tests restart and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import SECRETS, Cli, Result, assert_no_secret, start_xnovu
from tests.support import Env, Stack, environment, eventually
from xnovu import __version__
from xnovu.config import Settings
from xnovu.devtools.stack import free_port

SCHEDULE_IDS = ["xnovu-poll-new", "xnovu-poll-failed", "xnovu-poll-scheduled", "xnovu-rules-sync", "xnovu-retention"]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class World:
    """A module-wide environment with a detached worker started through the CLI."""

    env: Env
    settings: Settings
    cli: Cli
    started: Result
    pids: set[int] = field(default_factory=set)
    #: Every body fetched from the health server, for the I6 check at the end.
    bodies: list[str] = field(default_factory=list)

    @property
    def pid_file(self) -> Path:
        return self.settings.worker_pid_file

    @property
    def log_file(self) -> Path:
        return self.settings.worker_pid_file.with_suffix(".log")

    def pid(self) -> int:
        pid = int(self.pid_file.read_text().strip())
        self.pids.add(pid)
        return pid

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"http://127.0.0.1:{self.settings.worker_health_port}{path}")
        self.bodies.append(response.text)
        return response


@pytest.fixture(scope="module")
async def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("worker")
    (tmp / "cwd").mkdir()
    async with environment(stack) as env:
        settings = env.settings.model_copy(
            update={"worker_health_port": free_port(), "worker_pid_file": tmp / "state" / "worker.pid"}
        )
        cli = Cli(settings, tmp / "cwd")
        started = await cli("worker", "start", "--detach", timeout=90)
        w = World(env, settings, cli, started)
        if w.pid_file.exists():
            w.pid()
        try:
            yield w
        finally:
            with contextlib.suppress(Exception):
                await cli("worker", "stop", "--timeout", "20", timeout=30)
            for pid in w.pids:  # only processes this module started
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


async def test_worker_start_detach_writes_a_pid_file_and_status_reports_running(world: World) -> None:
    world.started.ok()
    assert world.pid_file.exists(), world.started
    pid = world.pid()
    assert alive(pid)
    assert str(pid) in world.started.stdout
    as_json, as_text, second = await asyncio.gather(
        world.cli("worker", "status", "--json"),
        world.cli("worker", "status"),
        world.cli("worker", "start", "--detach"),  # refused while one runs
    )
    info = as_json.ok().json()
    assert info["running"] is True and info["pid"] == pid and info["health"] == "ok", info
    assert f"running, pid {pid}" in as_text.ok().stdout
    line = second.error_line()
    assert "already running" in line and str(pid) in line, line
    assert world.pid() == pid


async def test_worker_health_and_status_endpoints_describe_the_worker(world: World) -> None:
    out = await world.cli.json("worker", "health")
    assert out["health"] == {"status": "ok"}, out
    for status in (out["status"], (await world.get("/status")).json()):
        assert status["version"] == __version__
        assert status["namespace"] == world.settings.temporal_namespace
        assert status["task_queue"] == world.settings.temporal_task_queue
        assert [s["id"] for s in status["schedules"]] == SCHEDULE_IDS, status["schedules"]
        assert isinstance(status["counts"], dict) and "error" not in status["counts"], status["counts"]
    assert (await world.get("/health")).json() == {"status": "ok"}
    metrics = await world.get("/metrics")
    assert metrics.status_code == 200 and "xnovu_" in metrics.text
    assert "text/plain" in metrics.headers["content-type"]


async def test_detached_worker_sends_a_pending_row(world: World) -> None:
    env = world.env
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=2)
    await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
    row = await env.row(nid)
    sent = {d["subscriberId"] for d in env.deliveries() if d["transactionId"].startswith(f"xnovu-{nid}-")}
    assert sent == {str(r) for r in row["recipients"]}

    async def counted() -> bool:
        counts: dict[str, int] = (await world.get("/status")).json()["counts"]
        return counts.get("SENT", 0) >= 1

    await eventually(counted, timeout=10)


async def test_foreground_worker_exits_0_on_sigterm_within_40_s(world: World) -> None:
    port = free_port()
    proc = await start_xnovu(world.settings, "worker", "start", cwd=world.cli.cwd, env={"WORKER_HEALTH_PORT": port})
    try:

        async def healthy() -> bool:
            if proc.returncode is not None:  # not AssertionError: `eventually` would keep waiting
                raise RuntimeError(f"the foreground worker exited early with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            return False

        await eventually(healthy, timeout=40)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 40)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    assert proc.returncode is not None
    world.cli.results.append(Result(("worker", "start"), proc.returncode, stdout, stderr))
    assert proc.returncode == 0, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert "worker stopped" in stdout + stderr, (stdout, stderr)


async def test_worker_restart_starts_a_new_process(world: World) -> None:
    old = world.pid()
    out = (await world.cli("worker", "restart", timeout=90)).ok().stdout
    new = world.pid()
    assert new != old and str(new) in out, out
    assert not alive(old) and alive(new)
    info = await world.cli.json("worker", "status")
    assert info["running"] is True and info["pid"] == new, info


async def test_worker_stop_ends_the_process_and_removes_the_pid_file(world: World) -> None:
    pid = world.pid()
    out = (await world.cli("worker", "stop", timeout=90)).ok().stdout
    assert str(pid) in out and "stopped" in out, out
    assert not alive(pid)
    assert not world.pid_file.exists()
    after, as_json, again = await asyncio.gather(
        world.cli("worker", "status"), world.cli("worker", "status", "--json"), world.cli("worker", "stop")
    )
    assert after.returncode == 1 and "not running" in after.stdout, after
    assert as_json.returncode == 1 and as_json.json()["running"] is False, as_json
    assert "no worker was running" in again.ok().stdout


async def test_no_secret_in_worker_log_health_endpoints_or_cli_output(world: World) -> None:
    """I6, over everything this module saw: the detached workers' log, /status, /health, /metrics, CLI output."""
    log = world.log_file.read_text(errors="replace")
    assert "worker started" in log, "the log file should hold the workers' logs"
    assert_no_secret(log, SECRETS, "the worker log file")
    assert world.bodies and any('"namespace"' in b for b in world.bodies) and any("xnovu_" in b for b in world.bodies)
    for body in world.bodies:
        assert_no_secret(body, SECRETS, "a health server response")
    assert len(world.cli.results) >= 10
    for result in world.cli.results:
        assert_no_secret(result.stdout + result.stderr, SECRETS, f"`xnovu {' '.join(result.args)}`")
