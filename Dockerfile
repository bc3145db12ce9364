# syntax=docker/dockerfile:1
# incidentd: `docker build -t incidentd .` then `docker run incidentd` (production mode:
# INCIDENTD_KAFKA_BOOTSTRAP_SERVERS and INCIDENTD_DATABASE_URL must point at real services) or
# `docker run incidentd run --embedded` (bundled broker, SQLite, console pager).

# ---- build: install the package and its dependencies into a self-contained venv ----
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# README.md* : optional (pyproject names it as the long description), present once written.
COPY pyproject.toml README.md* ./
COPY service ./service
# Bytecode compiled here: PYTHONDONTWRITEBYTECODE keeps every start from writing it, so without
# it every start compiled the service's modules again.
RUN pip install . \
    && python -m compileall -q /opt/venv/lib >/dev/null \
    && incidentd --help >/dev/null

# ---- runtime ----
FROM python:3.11-slim
LABEL org.opencontainers.image.title="incidentd" \
      org.opencontainers.image.description="Alert-driven incident processor: Alertmanager -> Kafka -> rules -> incidents -> pages -> CloudEvents" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INCIDENTD_RULES_DIR=/app/rules \
    INCIDENTD_HTTP_PORT=8080
# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 incidentd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin incidentd \
    && mkdir -p /app/var \
    && chown 10001:10001 /app/var
COPY --from=build /opt/venv /opt/venv
COPY rules /app/rules
WORKDIR /app
# Refuse to build an image whose rules do not load.
RUN incidentd rules check /app/rules
USER 10001:10001
EXPOSE 8080
# Liveness only (readiness, /readyz, also needs Kafka and the store). No curl in slim: Python,
# whose uncaught error (connection refused, HTTP >= 400, timeout) exits 1 = unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INCIDENTD_HTTP_PORT', '8080') + '/healthz', timeout=4)"]
ENTRYPOINT ["incidentd"]
CMD ["run"]
