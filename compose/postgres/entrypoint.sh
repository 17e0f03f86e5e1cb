#!/bin/sh
# Entrypoint of the timescaledb service, in front of the image's own docker-entrypoint.sh (the
# official postgres/timescaledb images and the offline stand-in all have one). Runs as root:
#  - the WAL archive volume: owned by postgres, group of the llmobs image (gid 1001) so that
#    backup jobs can prune it (archive_command makes each segment readable to them);
#  - TLS (prod overlay): PostgreSQL refuses a key that others can read, and Docker secrets are
#    world-readable files: copy them to a private directory owned by postgres;
#  - the data directory is PGDATA, a subdirectory of the db-data volume (restores keep the
#    previous one aside beside it). A volume of the earlier layout, with the data directory at
#    its root, is moved into it once: entry by entry (renames within the volume), PG_VERSION
#    last, so that an interrupted move resumes on the next start.
set -eu

volume="$(dirname "$PGDATA")"
if [ -f "$volume/PG_VERSION" ] && [ "$volume" != "$PGDATA" ]; then
    if [ -f "$PGDATA/PG_VERSION" ]; then
        echo "llmobs: both $volume and $PGDATA hold a data directory; refusing to start." >&2
        echo "llmobs: keep one (see docs/compose.md, 'Volume layout') and start again." >&2
        exit 1
    fi
    echo "llmobs: moving the data directory from the root of the volume into $PGDATA (new layout)" >&2
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    for entry in "$volume"/* "$volume"/.[!.]*; do
        [ -e "$entry" ] || continue
        case "${entry##*/}" in
            "${PGDATA##*/}"|PG_VERSION|lost+found) ;;
            *) mv "$entry" "$PGDATA/" ;;
        esac
    done
    mv "$volume/PG_VERSION" "$PGDATA/PG_VERSION"
fi

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
