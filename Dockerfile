# The orchestrator itself (API + reconcile loop; the same image runs `reconcile --once` for cron).
# Build it with scripts/build-orchestrator-image on a machine with no registry (local debootstrap'd base +
# a host-built wheelhouse, like the agent image), or plainly where python:3.11-slim can be pulled:
#   docker build -t agent-orchestrator/orchestrator:latest .
ARG BASE_IMAGE=python:3.11-slim

# Stage 1 installs the project and its pinned dependencies into /opt/venv; the wheelhouse stays behind.
FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# `wheel[s]` matches the wheelhouse when the build script put one in the context and nothing
# otherwise, so a plain build from the repo root falls back to the package index.
COPY wheel[s] /build/wheels/
COPY pyproject.toml README.md /build/src/
COPY orchestrator/ /build/src/orchestrator/
COPY api/ /build/src/api/
COPY agent_image/ /build/src/agent_image/
RUN set -eu; \
    if ls /build/wheels/*.whl >/dev/null 2>&1; then offline="--no-index --find-links /build/wheels"; else offline=""; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install $offline /build/src

FROM ${BASE_IMAGE}
# iptables: the host filter the orchestrator installs on its agents' bridge (ORCH_AGENT_HOST_FILTER; compose gives
# the container NET_ADMIN on the host's network). Debian's default (nf_tables) backend, as the host's engine uses.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    ORCH_LOG_FORMAT=json ORCH_HOST=0.0.0.0 ORCH_PORT=8000
COPY --from=deps /opt/venv /opt/venv
COPY migrations/ /app/migrations/
WORKDIR /app
# Runs as root: it drives the host's Docker socket, which is root-equivalent anyway; mount it read-write
# and nothing else. It only ever touches containers labelled with its own ORCH_SCOPE.
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ORCH_PORT', '8000'), timeout=4)"]
# SIGTERM: stop accepting, end dashboard streams, let in-flight triggers finish (<= 10 s); agents keep running.
STOPSIGNAL SIGTERM
CMD ["orchestrator", "serve"]
