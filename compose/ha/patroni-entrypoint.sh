#!/bin/sh
# Entrypoint of the `ha` profile's db-N services (Patroni's image, docker/patroni). Runs as root:
# prepares the data and WAL archive volumes, then runs Patroni as postgres. The superuser,
# replication and REST passwords go from the Docker secrets into a configuration file only
# postgres reads (compose/ha/patroni-credentials.py): never the environment, the container's
# configuration (`docker inspect`) or a command line.
set -eu

data_root="$(dirname "$PATRONI_POSTGRESQL_DATA_DIR")"
mkdir -p "$data_root"
chown postgres:postgres "$data_root"
chmod 0700 "$data_root"
if [ -d /wal-archive ]; then
    chown "postgres:${WAL_ARCHIVE_GID:-1001}" /wal-archive
    chmod 0770 /wal-archive
fi

# Patroni's configuration is a directory: 00-patroni.yml and the passwords, rendered from the
# Docker secrets into a file only postgres reads (`llmobs secrets rotate ha` renders it again and
# makes Patroni reload it).
python3 /etc/llmobs/ha/patroni-credentials.py render

# After `llmobs restore`: the data directory is empty (moved aside) and the restored one waits
# beside it; Patroni bootstraps the new cluster from it (bootstrap method llmobs_restore). The
# override is one more file of the configuration directory, which Patroni merges in name order.
restore_override=/run/patroni/10-bootstrap-restored.yml
rm -f "$restore_override"
if [ -d "$PATRONI_POSTGRESQL_DATA_DIR.restored" ] && [ -z "$(ls -A "$PATRONI_POSTGRESQL_DATA_DIR" 2>/dev/null)" ]; then
    printf 'bootstrap:\n  method: llmobs_restore\n' >"$restore_override"
    chown postgres:postgres "$restore_override"
    chmod 0600 "$restore_override"
    echo "patroni-entrypoint: bootstrapping from the restored data directory" >&2
fi

cd /var/lib/postgresql
exec setpriv --reuid=postgres --regid=postgres --init-groups patroni /run/patroni
