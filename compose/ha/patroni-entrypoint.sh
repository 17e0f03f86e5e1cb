#!/bin/sh
# Entrypoint of the `ha` profile's db-N services (Patroni's image, docker/patroni). Runs as root:
# prepares the data and WAL archive volumes, then runs Patroni as postgres. The superuser,
# replication and REST passwords go from the Docker secrets into Patroni's environment only
# (not the container's configuration, `docker inspect` or a command line).
set -eu

data_root="$(dirname "$PATRONI_POSTGRESQL_DATA_DIR")"
mkdir -p "$data_root"
chown postgres:postgres "$data_root"
chmod 0700 "$data_root"
if [ -d /wal-archive ]; then
    chown "postgres:${WAL_ARCHIVE_GID:-1001}" /wal-archive
    chmod 0770 /wal-archive
fi

PATRONI_SUPERUSER_PASSWORD="$(cat /run/secrets/db_password)"
PATRONI_REPLICATION_PASSWORD="$(cat /run/secrets/db_replication_password)"
PATRONI_REWIND_PASSWORD="$PATRONI_SUPERUSER_PASSWORD"
PATRONI_RESTAPI_PASSWORD="$(cat /run/secrets/patroni_rest_password)"
PATRONI_SUPERUSER_USERNAME=postgres
PATRONI_REPLICATION_USERNAME=replicator
PATRONI_REWIND_USERNAME=postgres
PATRONI_RESTAPI_USERNAME=patroni
export PATRONI_SUPERUSER_USERNAME PATRONI_REPLICATION_USERNAME PATRONI_REWIND_USERNAME PATRONI_RESTAPI_USERNAME
export PATRONI_SUPERUSER_PASSWORD PATRONI_REPLICATION_PASSWORD PATRONI_REWIND_PASSWORD PATRONI_RESTAPI_PASSWORD

# After `llmobs restore`: the data directory is empty (moved aside) and the restored one waits
# beside it; Patroni bootstraps the new cluster from it (bootstrap method llmobs_restore).
config=/etc/llmobs/ha/patroni.yml
if [ -d "$PATRONI_POSTGRESQL_DATA_DIR.restored" ] && [ -z "$(ls -A "$PATRONI_POSTGRESQL_DATA_DIR" 2>/dev/null)" ]; then
    sed 's/^  method: initdb$/  method: llmobs_restore/' "$config" >/tmp/patroni.yml
    chmod 0644 /tmp/patroni.yml
    config=/tmp/patroni.yml
    echo "patroni-entrypoint: bootstrapping from the restored data directory" >&2
fi

cd /var/lib/postgresql
exec setpriv --reuid=postgres --regid=postgres --init-groups patroni "$config"
