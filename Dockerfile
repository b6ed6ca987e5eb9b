# syntax=docker/dockerfile:1
# xnovu worker image. The same image runs every xnovu command:
#   docker run IMAGE                         -> xnovu worker start (default)
#   docker run IMAGE db migrate              -> one-shot schema migration
#   docker run IMAGE bootstrap               -> Temporal namespace, search attributes, schedules
#   docker run IMAGE emulator --host 0.0.0.0 -> Novu API emulator on 8787

# ---- builder: install the locked dependencies, build the wheel and install it into /opt/venv ----
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Every dependency at the version of the lock, each file checked against its hash (README "Installation and
# dependencies"; re-lock with `bash scripts/lock.sh`): the same image from the same commit, whatever PyPI has today.
# The lock includes the build backend, and the `otel` extra: traces are exported whenever OTEL_EXPORTER_OTLP_ENDPOINT
# is set (README "Observability"). Its own layer, so a code change does not reinstall the dependencies.
COPY requirements/docker.txt ./requirements/
RUN pip install --require-hashes -r requirements/docker.txt
# README* is a glob so the build still works before a README exists (pyproject names it).
COPY pyproject.toml README* ./
COPY xnovu ./xnovu
# xnovu itself, built with the locked backend and installed against what is installed only (--no-index): a
# dependency of pyproject.toml missing from the lock fails the build here instead of being fetched unpinned.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && pip install --no-index "$(ls /wheels/xnovu-*.whl)[otel]" \
 && pip check \
 && xnovu --help >/dev/null

# ---- runtime: slim image with only the venv, running as an unprivileged user ----
FROM python:3.11-slim AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# uid/gid 10001: a fixed, non-root id so Kubernetes can set runAsUser: 10001 / runAsNonRoot.
RUN groupadd --system --gid 10001 xnovu \
 && useradd --system --uid 10001 --gid xnovu --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin xnovu \
 && mkdir -p /app/.xnovu \
 && chown -R xnovu:xnovu /app

COPY --from=builder /opt/venv /opt/venv

# The worker keeps its pid file in .xnovu/ (WORKER_PID_FILE), so the working directory is writable.
WORKDIR /app
USER xnovu

EXPOSE 3001

# Shell form on purpose: the shell expands WORKER_HEALTH_PORT at check time. urlopen raises on 503 -> unhealthy.
# (slim images have no curl; python's urllib is always there.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${WORKER_HEALTH_PORT:-3001}/health', timeout=4)" || exit 1

# The worker drains in-flight work on SIGTERM; give it time (compose stop_grace_period / k8s
# terminationGracePeriodSeconds >= 60s).
STOPSIGNAL SIGTERM

ENTRYPOINT ["xnovu"]
CMD ["worker", "start"]
