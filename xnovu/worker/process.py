"""Worker process control: foreground run with graceful signals, and detached start/stop/status via a pid file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from xnovu.config import Settings
from xnovu.errors import XnovuError
from xnovu.tracing import Tracing

log = logging.getLogger(__name__)


async def run_foreground(settings: Settings, tracing: Tracing | None = None) -> None:
    """Run the worker until SIGTERM/SIGINT: stop polling, let in-flight work finish, close, return (exit 0)."""
    from xnovu.worker.manager import WorkerManager

    manager = WorkerManager(settings, tracing=tracing)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await manager.start()
        waiter = asyncio.create_task(stop.wait())
        worker = asyncio.create_task(manager.wait())
        done, _ = await asyncio.wait({waiter, worker}, return_when=asyncio.FIRST_COMPLETED)
        if worker in done:
            worker.result()  # the worker died on its own: surface why
        else:
            log.info("signal received: shutting down gracefully")
    finally:
        await manager.stop()


def log_file(settings: Settings) -> Path:
    return settings.worker_pid_file.with_suffix(".log")


def read_pid(settings: Settings) -> int | None:
    """The pid in WORKER_PID_FILE if that process is alive (a stale file is ignored)."""
    try:
        pid = int(settings.worker_pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def health_url(settings: Settings, path: str = "/health") -> str:
    host = settings.worker_health_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.worker_health_port}{path}"


def _get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def fetch_health(settings: Settings) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """(healthy, /health body, /status body) from the local worker; unreachable = unhealthy."""
    try:
        code, health = _get_json(health_url(settings))
    except (OSError, ValueError) as exc:
        return False, {"status": "unreachable", "reason": f"{health_url(settings)}: {exc}"}, {}
    try:
        _, status = _get_json(health_url(settings, "/status"), timeout=10)
    except (OSError, ValueError):
        status = {}
    return code == 200, health, status


def start_detached(settings: Settings, *, wait_s: float = 60.0) -> int:
    """Start `xnovu worker start` in the background; returns once /health answers 200."""
    existing = read_pid(settings)
    if existing is not None:
        raise XnovuError(f"a worker is already running (pid {existing}); use `xnovu worker restart`")
    settings.worker_pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file(settings).open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xnovu", "worker", "start"],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    settings.worker_pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            settings.worker_pid_file.unlink(missing_ok=True)
            tail = log_file(settings).read_text(errors="replace").strip().splitlines()[-1:]
            raise XnovuError(f"the worker exited with code {proc.returncode}: {' '.join(tail)}")
        healthy, _, _ = fetch_health(settings) if _port_open(settings) else (False, {}, {})
        if healthy:
            return proc.pid
        time.sleep(0.3)
    raise XnovuError(f"the worker (pid {proc.pid}) is not healthy after {wait_s:.0f} s; see {log_file(settings)}")


def _port_open(settings: Settings) -> bool:
    import socket

    host = "127.0.0.1" if settings.worker_health_host in ("0.0.0.0", "::", "") else settings.worker_health_host
    with contextlib.suppress(OSError), socket.create_connection((host, settings.worker_health_port), timeout=0.3):
        return True
    return False


def stop_detached(settings: Settings, timeout_s: float = 60.0) -> int | None:
    """SIGTERM the detached worker and wait for it to exit; None if none was running."""
    pid = read_pid(settings)
    if pid is None:
        settings.worker_pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    else:
        raise XnovuError(f"worker {pid} did not exit within {timeout_s:.0f} s; it is still running")
    settings.worker_pid_file.unlink(missing_ok=True)
    return pid


def status(settings: Settings) -> dict[str, Any]:
    """Running?, pid, uptime and a health summary."""
    pid = read_pid(settings)
    if pid is None:
        return {"running": False, "pid": None, "uptime_s": None, "health": None}
    uptime = _uptime(settings, pid)
    healthy, health, _ = fetch_health(settings)
    return {
        "running": True,
        "pid": pid,
        "uptime_s": uptime,
        "health": "ok" if healthy else health.get("reason", "unhealthy"),
    }


def _uptime(settings: Settings, pid: int) -> float | None:
    """Seconds since the worker started: from the process table when psutil is installed (the `embedded` extra),
    else from the pid file, which `start_detached` writes as the process starts (a lean install has no psutil)."""
    try:
        import psutil

        return float(time.time() - psutil.Process(pid).create_time())
    except ImportError:
        pass
    except Exception:
        return None
    try:
        return time.time() - settings.worker_pid_file.stat().st_mtime
    except OSError:
        return None
