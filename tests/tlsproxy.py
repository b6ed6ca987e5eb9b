"""Temporal Cloud's front door, locally: nginx (Debian's packages) terminating TLS in front of the dev server.

Two listeners pass gRPC (HTTP/2, `grpc_pass`) to the dev server: one requires a client certificate signed by the
test CA (mTLS, like a namespace's `*.tmprl.cloud` endpoint), the other requires `authorization: Bearer <key>` (what
the Temporal client sends for TEMPORAL_API_KEY) and answers anything else with gRPC status 16 UNAUTHENTICATED. Both
present a server certificate of the test CA, so the client needs TEMPORAL_TLS_SERVER_CA.

nginx runs in the foreground as a child process with its own prefix, configuration and logs in a temporary folder;
`apt-get install nginx-light` (which `.ci/run` does on CI) provides it, and the tests that need it skip without it.
Certificates come from the openssl command line (no Python crypto package is a dependency).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from xnovu.devtools.stack import free_port, wait_for_port


def nginx_binary() -> str | None:
    """nginx from the system packages (Debian installs it in /usr/sbin, which a non-root PATH may lack)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def openssl_binary() -> str | None:
    return shutil.which("openssl")


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certificates:
    """A test CA, the proxy's server certificate, a client certificate it signed, and a stranger's pair."""

    ca: Path
    server: Pair
    client: Pair
    stranger: Pair
    """Self-signed: a client certificate the proxy must refuse."""


def _openssl(openssl: str, *args: str) -> None:
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)


def _new_key(openssl: str, key: Path) -> None:
    """A P-256 key in PKCS#8 PEM (fast to make; what rustls and nginx both read)."""
    _openssl(openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))


def _signed(openssl: str, folder: Path, name: str, subject: str, extensions: str, ca: Pair) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    _new_key(openssl, pair.key)
    csr, ext = folder / f"{name}.csr", folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(openssl, "req", "-new", "-key", str(pair.key), "-subj", subject, "-out", str(csr))
    _openssl(
        openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(pair.cert),
    )  # fmt: skip
    return pair


def _self_signed(openssl: str, folder: Path, name: str, subject: str) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    _new_key(openssl, pair.key)
    _openssl(
        openssl, "req", "-x509", "-new", "-key", str(pair.key), "-subj", subject, "-days", "2", "-out", str(pair.cert)
    )
    return pair


def make_certificates(folder: Path, openssl: str) -> Certificates:
    """The CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a stranger's pair."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _self_signed(openssl, folder, "ca", "/CN=xnovu test CA")
    server = _signed(
        openssl, folder, "server", "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n", ca,
    )  # fmt: skip
    client = _signed(
        openssl, folder, "client", "/CN=xnovu worker", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n", ca
    )
    stranger = _self_signed(openssl, folder, "stranger", "/CN=xnovu worker")
    return Certificates(ca.cert, server, client, stranger)


_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 256; }}
http {{
  # One access log per listener (in its server block), so a test can tell which door its calls went through.
  client_body_temp_path {folder}/tmp;
  proxy_temp_path {folder}/tmp;
  fastcgi_temp_path {folder}/tmp;
  uwsgi_temp_path {folder}/tmp;
  scgi_temp_path {folder}/tmp;
  # Temporal's long polls last up to 70 s and its payloads may exceed nginx's 1 MB default.
  grpc_read_timeout 120s;
  grpc_send_timeout 120s;
  client_max_body_size 0;
  ssl_certificate {server_cert};
  ssl_certificate_key {server_key};
  map $http_authorization $api_key_ok {{
    "Bearer {api_key}" 1;
    default 0;
  }}
  server {{
    listen 127.0.0.1:{mtls_port} ssl http2;
    ssl_client_certificate {ca};
    ssl_verify_client on;
    access_log {folder}/access-{mtls_port}.log;
    location / {{ grpc_pass grpc://{upstream}; }}
  }}
  server {{
    listen 127.0.0.1:{api_key_port} ssl http2;
    access_log {folder}/access-{api_key_port}.log;
    location / {{
      if ($api_key_ok = 0) {{
        add_header grpc-status 16 always;
        add_header grpc-message "Request unauthorized: invalid API key" always;
        return 204;
      }}
      grpc_pass grpc://{upstream};
    }}
  }}
}}
"""


@dataclass
class TlsProxy:
    """The running nginx; `mtls_address` and `api_key_address` are TEMPORAL_ADDRESS values."""

    process: subprocess.Popen[bytes]
    folder: Path
    certs: Certificates
    mtls_port: int
    api_key_port: int

    @property
    def mtls_address(self) -> str:
        return f"127.0.0.1:{self.mtls_port}"

    @property
    def api_key_address(self) -> str:
        return f"127.0.0.1:{self.api_key_port}"

    def requests(self, port: int) -> list[str]:
        """The gRPC methods the listener on `port` passed to Temporal (answered 200), oldest first."""
        log = self.folder / f"access-{port}.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return [line.split('"POST /', 1)[1].split(" ", 1)[0] for line in lines if '" 200 ' in line]

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_tls_proxy(folder: Path, upstream: str, api_key: str, nginx: str, certs: Certificates) -> TlsProxy:
    """Start nginx in front of the gRPC server at `upstream` (host:port) and wait until both listeners answer."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    mtls_port, api_key_port = free_port(), free_port()
    config = _CONFIG.format(
        folder=folder,
        server_cert=certs.server.cert,
        server_key=certs.server.key,
        ca=certs.ca,
        api_key=api_key,
        upstream=upstream,
        mtls_port=mtls_port,
        api_key_port=api_key_port,
    )
    conf = folder / "nginx.conf"
    conf.write_text(config)
    # -e: the error log before the configuration is read (the compiled-in /var/log/nginx may not be writable).
    process = subprocess.Popen(
        [nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", mtls_port, 15, process)
        wait_for_port("127.0.0.1", api_key_port, 15, process)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        raise
    return TlsProxy(process, folder, certs, mtls_port, api_key_port)
