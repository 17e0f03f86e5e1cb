#!/bin/sh
# Entrypoint of the timescaledb service, in front of the image's own docker-entrypoint.sh (the
# official postgres/timescaledb images and the offline stand-in all have one). Runs as root:
#  - the WAL archive volume: owned by postgres, group of the llmobs image (gid 1001) so that
#    backup jobs can prune it (archive_command makes each segment readable to them);
#  - TLS (prod overlay): PostgreSQL refuses a key that others can read, and Docker secrets are
#    world-readable files: copy them to a private directory owned by postgres.
set -eu

if [ -d /wal-archive ]; then
    chown "postgres:${WAL_ARCHIVE_GID:-1001}" /wal-archive
    chmod 0770 /wal-archive
fi

if [ -n "${POSTGRES_TLS_CERT_FILE:-}" ]; then
    tls=/var/lib/postgresql/tls
    mkdir -p "$tls"
    cp "$POSTGRES_TLS_CERT_FILE" "$tls/server.crt"
    cp "$POSTGRES_TLS_KEY_FILE" "$tls/server.key"
    chown -R postgres:postgres "$tls"
    chmod 0700 "$tls"
    chmod 0644 "$tls/server.crt"
    chmod 0600 "$tls/server.key"
fi

exec docker-entrypoint.sh "$@"
