# The project's image: one image for `llmobs serve api`, `llmobs serve collector` and
# `llmobs backup schedule` (and one-off jobs such as `llmobs restore`), as uid 1001.
#
#   docker build -t llmobs .                         # wheels from PyPI (needs BuildKit)
#   docker build --build-arg WHEELS=local ...        # wheels prebuilt in build/wheelhouse/{deps,project}
#                                                    # (scripts/offline-images, no registry)
# PG_MAJOR must match the PostgreSQL server's major version: pg_dump and pg_basebackup refuse
# newer servers. Debian 12 ships 15; other majors come from apt.postgresql.org.
ARG BASE_IMAGE=debian:bookworm-slim
ARG WHEELS=pypi

# --- Python and a virtualenv, shared by the build stages ----------------------------------
FROM ${BASE_IMAGE} AS python
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 python3-venv; \
    rm -rf /var/lib/apt/lists/*

# --- wheels, either built here from PyPI ... ----------------------------------------------
FROM python AS wheels-pypi
COPY pyproject.toml setup.py README.md /src/
COPY llmobs /src/llmobs
COPY compose /src/compose
COPY init-sql /src/init-sql
COPY grafana-provisioning /src/grafana-provisioning
COPY monitoring /src/monitoring
RUN set -eux; \
    python3 -m venv /tmp/pip; \
    /tmp/pip/bin/pip wheel --no-cache-dir --wheel-dir /wheels/deps /src; \
    mkdir -p /wheels/project; \
    mv /wheels/deps/llmobs-*.whl /wheels/project/

# --- ... or built on the host (scripts/offline-images) ------------------------------------
FROM scratch AS wheels-local
COPY build/wheelhouse/deps/ /wheels/deps/
COPY build/wheelhouse/project/ /wheels/project/

FROM wheels-${WHEELS} AS wheels

# --- the virtualenv: dependencies first, so that a code change reuses that layer ----------
FROM python AS venv
COPY --from=wheels /wheels/deps /wheels/deps
RUN python3 -m venv /opt/llmobs \
    && /opt/llmobs/bin/pip install --no-cache-dir --no-index --disable-pip-version-check /wheels/deps/*.whl
COPY --from=wheels /wheels/project /wheels/project
RUN /opt/llmobs/bin/pip install --no-cache-dir --no-index --no-deps --disable-pip-version-check \
        /wheels/project/*.whl \
    && /opt/llmobs/bin/pip uninstall --yes --quiet pip setuptools \
    && find /opt/llmobs -name '__pycache__' -prune -exec rm -rf '{}' + \
    && /opt/llmobs/bin/python -m compileall -q -j 0 /opt/llmobs/lib

# --- apt sources with PostgreSQL ${PG_MAJOR} (Debian's own for 15, apt.postgresql.org otherwise) -
FROM ${BASE_IMAGE} AS pg-apt
ARG PG_MAJOR=16
RUN set -eux; \
    apt-get update; \
    if ! apt-cache show "postgresql-client-${PG_MAJOR}" >/dev/null 2>&1; then \
        apt-get install -y --no-install-recommends postgresql-common ca-certificates; \
        /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y; \
    fi; \
    rm -rf /var/lib/apt/lists/*

# --- pg_waldump and pg_controldata: in the server package, without its dependencies --------
# (restores read commit times from WAL and the timeline of a data directory; both programs need
# only libc, lz4 and zstd, which the client package brings)
FROM pg-apt AS pg-server-tools
ARG PG_MAJOR=16
RUN set -eux; \
    apt-get update; \
    cd /tmp; \
    apt-get download "postgresql-${PG_MAJOR}"; \
    dpkg-deb -x postgresql-"${PG_MAJOR}"_*.deb /tmp/server; \
    mkdir /out; \
    cp /tmp/server/usr/lib/postgresql/"${PG_MAJOR}"/bin/pg_waldump \
       /tmp/server/usr/lib/postgresql/"${PG_MAJOR}"/bin/pg_controldata /out/

# --- runtime ------------------------------------------------------------------------------
FROM pg-apt AS runtime
ARG PG_MAJOR=16
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 ca-certificates "postgresql-client-${PG_MAJOR}"; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 1001 llmobs; \
    useradd --uid 1001 --gid 1001 --home-dir /home/llmobs --create-home --shell /usr/sbin/nologin llmobs; \
    install -d -o llmobs -g llmobs -m 0750 /var/lib/llmobs; \
    # The backup repository (a volume): group llmobs may write, setgid, so that restore jobs
    # (PostgreSQL's uid with group 1001 added) share it with the backup jobs.
    install -d -o llmobs -g llmobs -m 2770 /backups; \
    # A project directory for every `llmobs` command in the container: its .env only marks it;
    # the settings come from the environment and the secrets from /run/secrets (*_FILE).
    install -d -m 0755 /etc/llmobs/project; \
    printf 'LLMOBS_RUNTIME=compose\n' > /etc/llmobs/project/.env
COPY --from=venv /opt/llmobs /opt/llmobs
COPY --from=pg-server-tools /out/ /usr/lib/postgresql/${PG_MAJOR}/bin/
COPY docker/app/healthcheck.py /usr/local/bin/llmobs-healthcheck
ENV PATH=/opt/llmobs/bin:/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PG_MAJOR=${PG_MAJOR} \
    LLMOBS_PROJECT_DIR=/etc/llmobs/project \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BIND_ADDRESS=0.0.0.0 \
    HOME=/home/llmobs
USER 1001:1001
WORKDIR /home/llmobs
EXPOSE 8080 4317 4318 9464
# Probes the api's /health by default; the compose file points the collector's at its metrics
# port and the backup scheduler's at its process.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["llmobs-healthcheck"]
ENTRYPOINT ["llmobs"]
CMD ["serve", "api"]
