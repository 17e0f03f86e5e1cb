#!/bin/sh
# First initialisation only (/docker-entrypoint-initdb.d): allow password-authenticated
# replication connections from the stack's network, which `pg_basebackup` in backup jobs needs
# (the images allow only ordinary connections from other hosts).
set -eu
printf 'host replication all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
