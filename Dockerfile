# syntax=docker/dockerfile:1
#
# drkit: the scheduler container (default target) and, as target `db`, a PostgreSQL
# server image with drkit installed so that archive_command can run `drkit wal-push`.
#
#   docker build -t drkit .                               # PostgreSQL 16 client + server
#   docker build --build-arg PG_MAJOR=15 -t drkit:pg15 .  # match your server's major
#   docker build --target db -t postgres-drkit .          # the database, with wal-push
#
# Base images are pinned to exact releases; bump them deliberately.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm
ARG POSTGRES_IMAGE=postgres:16.6-bookworm
ARG PG_MAJOR=16

# ---------------------------------------------------------------------------
# build: the drkit wheel (pure Python; its dependencies are installed below, pinned)
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir --disable-pip-version-check build==1.2.2 \
 && python -m build --wheel --outdir /wheels .

# ---------------------------------------------------------------------------
# db: PostgreSQL with drkit for archive_command = 'drkit wal-push ENV %p'
# ---------------------------------------------------------------------------
FROM ${POSTGRES_IMAGE} AS db
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv zstd age ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
COPY deploy/constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/drkit \
 && /opt/drkit/bin/pip install --no-cache-dir --disable-pip-version-check \
        --constraint /tmp/constraints.txt /tmp/wheels/*.whl \
 && ln -s /opt/drkit/bin/drkit /usr/local/bin/drkit \
 && rm -rf /tmp/wheels /tmp/constraints.txt
ENV DRKIT_POLICY_DIR=/etc/drkit/policies

# ---------------------------------------------------------------------------
# drkit: the scheduler (`drkit schedule run`), serving /, /metrics, /healthz and /status on 9187
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS drkit
ARG PG_MAJOR

LABEL org.opencontainers.image.title="drkit" \
      org.opencontainers.image.description="PostgreSQL backups, PITR, sanitized copies and restore drills" \
      org.opencontainers.image.licenses="Apache-2.0"

# PostgreSQL ${PG_MAJOR} from the PGDG repository: the client (pg_dump, pg_restore,
# pg_basebackup, pg_amcheck) and the server binaries drills need for their scratch
# cluster (no cluster is created in the image).  zstd and age for the streams.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    install -d /usr/share/postgresql-common/pgdg /etc/postgresql-common/createcluster.d; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/drkit.conf; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        "postgresql-client-${PG_MAJOR}" "postgresql-${PG_MAJOR}" zstd age; \
    apt-get purge -y --auto-remove curl; \
    rm -rf /var/lib/apt/lists/*

# the dependencies at the versions the tests passed with (deploy/constraints.txt, from
# pyproject.toml by deploy/freeze_constraints.py), not whatever PyPI has on build day
COPY --from=build /wheels /tmp/wheels
COPY deploy/constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --disable-pip-version-check \
        --constraint /tmp/constraints.txt /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels /tmp/constraints.txt \
 && drkit --version

RUN groupadd --system --gid 10001 drkit \
 && useradd --system --uid 10001 --gid drkit --home-dir /var/lib/drkit --shell /usr/sbin/nologin drkit \
 && install -d -o drkit -g drkit /var/lib/drkit /var/lib/drkit/tmp /etc/drkit/policies /etc/drkit/sanitize_rules

ENV PYTHONUNBUFFERED=1 \
    DRKIT_POLICY_DIR=/etc/drkit/policies \
    TMPDIR=/var/lib/drkit/tmp \
    PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH} \
    DRKIT_HEALTHCHECK_URL=http://127.0.0.1:9187/healthz

# policies and sanitize rules are mounted read-only; /var/lib/drkit holds file://
# repositories and the drills' scratch clusters
VOLUME ["/etc/drkit/policies", "/etc/drkit/sanitize_rules", "/var/lib/drkit"]
WORKDIR /etc/drkit
USER drkit:drkit
EXPOSE 9187
STOPSIGNAL SIGTERM

# 200 while the daemon and its scheduler are alive (job outcomes are in /status and /metrics,
# so a failed drill never restarts the container); urlopen raises on 503
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['DRKIT_HEALTHCHECK_URL'], timeout=8)"]

ENTRYPOINT ["drkit"]
# the port is the container's service port: listen on every interface of the container
# (drkit itself binds 127.0.0.1 unless told)
CMD ["schedule", "run", "--bind", "0.0.0.0"]
