#!/bin/sh
# Patroni's custom bootstrap method `llmobs_restore` (compose/ha/patroni.yml), run as postgres
# with --scope=... --datadir=DIR when DIR is empty: moves the data directory that `llmobs
# restore` prepared beside it (DIR.restored: a base backup with recovery.signal and the restore's
# recovery settings in postgresql.auto.conf) into place. Patroni keeps those settings, starts
# PostgreSQL, waits for recovery to promote, and takes the leader lock.
set -eu
datadir=""
for arg in "$@"; do
    case "$arg" in
        --datadir=*) datadir="${arg#--datadir=}" ;;
    esac
done
if [ -z "$datadir" ] || [ ! -d "$datadir.restored" ]; then
    echo "bootstrap-restored: no restored data directory beside ${datadir:-(none given)}" >&2
    exit 1
fi
rmdir "$datadir" 2>/dev/null || true
mv "$datadir.restored" "$datadir"
chmod 0700 "$datadir"
