"""A real transaction pooler for the tests and the soak (ops/soak/): pgbouncer (`pool_mode = transaction`) in front of
the embedded Postgres, the shape of Supabase's pooler (README "Configuration": `?pgbouncer=true`).

pgbouncer comes from the system packages (`apt-get install pgbouncer`, which `.ci/run` does on CI); callers skip
what needs it when `pgbouncer_binary()` is None.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from xnovu.devtools.stack import free_port


def pgbouncer_binary() -> str | None:
    """pgbouncer from the system packages (Debian installs it in /usr/sbin, which a non-root PATH may lack)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


@dataclass
class PgBouncer:
    """pgbouncer in `pool_mode = transaction` in front of the embedded Postgres, on its own port."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    password: str = ""
    """Put in the URLs (trust auth ignores it): lets a test check that it never shows up anywhere."""

    def url(self, database: str, query: str = "") -> str:
        """URL of `database` through the pooler."""
        auth = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def log(self) -> str:
        return (self.folder / "pgbouncer.log").read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait(10)


def start_pgbouncer(
    admin_url: str, executable: str, *, pool_size: int = 4, password: str = "", timeout_s: float = 15.0
) -> PgBouncer:
    """Start pgbouncer in front of the server of `admin_url` (transaction pooling, trust auth like pgserver) and
    wait until it answers. Call it outside a running event loop (or from a thread).

    pgbouncer refuses to run as root, so as root it is started with `-u` as the user that runs the embedded
    Postgres (it can reach that server's socket folder). Its files live in a folder that user can read.
    `pool_size` is smaller than the pools xnovu opens, so transactions really move between server connections.
    """
    parts = urlsplit(admin_url)
    socket_dir = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    pg_port = parts.port or 5432
    folder = Path(tempfile.mkdtemp(prefix="xnovu-pgbouncer-"))
    folder.chmod(0o755)
    port = free_port()
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={socket_dir} port={pg_port} user=postgres\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'userlist.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
        "server_reset_query =\nignore_startup_parameters = extra_float_digits\n"
        # After a failed server login pgbouncer refuses clients for this long (default 15 s); the soak restarts
        # Postgres under load, so keep the pooler's own back-off short.
        "server_login_retry = 1\n"
    )
    for f in folder.iterdir():
        f.chmod(0o644)
    args = [executable]
    if os.geteuid() == 0:
        owner = pwd.getpwuid(Path(socket_dir).stat().st_uid).pw_name
        args += ["-u", owner]
    args.append(str(folder / "pgbouncer.ini"))
    with (folder / "pgbouncer.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    bouncer = PgBouncer(process, port, folder, password)

    async def ready() -> bool:
        try:
            conn = await asyncpg.connect(bouncer.url("postgres"), statement_cache_size=0, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        await conn.close()
        return True

    deadline = time.monotonic() + timeout_s
    try:
        while not asyncio.run(ready()):
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {process.returncode}: {bouncer.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer does not answer after {timeout_s:.0f} s: {bouncer.log()}")
            time.sleep(0.2)
    except BaseException:
        bouncer.stop()
        raise
    return bouncer
