"""A real Prometheus for the tests: the Debian package's binary on a free loopback port, scraping targets listed in a
file (file_sd, so a test adds and removes workers as service discovery would), queried through its HTTP API.

The tests that use it skip where the binary is missing (`.ci/run` installs it as root: `apt-get install prometheus`).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from xnovu.devtools.stack import free_port

PROMETHEUS = shutil.which("prometheus") or next(
    (p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if Path(p).is_file()), None
)
#: The job name of ops/prometheus/prometheus.yml (the rules match job=~"xnovu.*").
JOB = "xnovu"
#: Grafana's variables as Grafana would set them over a 1 s scrape (`$__rate_interval` is at least four scrape
#: intervals; a minute spans the whole of a short test's history).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "1m"}


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced (every `$` must be one of them)."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


class Prometheus:
    """One running server; `set_targets` rewrites its file_sd list (atomically, as the docs advise)."""

    def __init__(self, base: Path, rule_files: Sequence[Path], targets: Sequence[str], interval_s: float) -> None:
        assert PROMETHEUS is not None
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_path = base / "targets.json"
        self.set_targets(targets)
        interval = f"{int(interval_s * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self.targets_path)], "refresh_interval": interval}],
                }
            ],
        }
        (base / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = base / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def set_targets(self, targets: Sequence[str]) -> None:
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": {}}] if targets else []), encoding="utf-8")
        tmp.replace(self.targets_path)

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready within {timeout_s} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()

    async def _get(self, path: str, **params: str) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            response = await http.get(path, params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query now: (labels, value) per sample of the resulting vector."""
        data = await self._get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    async def value(self, expr: str) -> float | None:
        """The one finite value of `expr`, or None while it has none."""
        values = [v for _, v in await self.query(expr) if math.isfinite(v)]
        return values[0] if len(values) == 1 else None

    async def rule_groups(self) -> dict[str, list[dict[str, Any]]]:
        """Rules by group name, with their health, state and active alerts."""
        data = await self._get("/api/v1/rules")
        return {g["name"]: g["rules"] for g in data["groups"]}

    async def alerts(self, group: str, alertname: str, state: str = "firing") -> list[dict[str, Any]]:
        """The active alerts of one rule in that state (labels and rendered annotations)."""
        [rule] = [r for r in (await self.rule_groups())[group] if r["name"] == alertname]
        return [a for a in rule.get("alerts", []) if a["state"] == state]


@contextmanager
def running_prometheus(
    base: Path, rule_files: Sequence[Path], targets: Sequence[str] = (), interval_s: float = 1.0
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (host:port) every `interval_s` and evaluating `rule_files` as often.

    Known targets go in from the start: service discovery changes reach the scrapes only every 5 s or so.
    """
    base.mkdir(parents=True, exist_ok=True)
    server = Prometheus(base, rule_files, targets, interval_s)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
