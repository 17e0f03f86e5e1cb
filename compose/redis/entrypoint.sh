#!/bin/sh
# Entrypoint of the redis service: writes redis.conf to a private tmpfs file at every start and
# runs redis-server on it, so the password is in no command line, environment or `docker inspect`.
# The `default` user is disabled; REDIS_USER authenticates with the password from the Docker secret.
# With REDIS_TLS_CERT_FILE (prod overlay) port 6380 speaks TLS, beside the plain 6379.
set -eu

conf=/tmp/redis.conf
umask 077
password="$(cat "${REDIS_PASSWORD_FILE:?REDIS_PASSWORD_FILE is not set}")"
{
    echo "bind * -::*"
    echo "protected-mode no"
    echo "dir /data"
    echo "appendonly yes"
    echo "appendfsync everysec"
    echo "save 900 1 300 10 60 10000"
    echo "port 6379"
    if [ -n "${REDIS_TLS_CERT_FILE:-}" ]; then
        echo "tls-port 6380"
        echo "tls-cert-file $REDIS_TLS_CERT_FILE"
        echo "tls-key-file $REDIS_TLS_KEY_FILE"
        echo "tls-ca-cert-file ${REDIS_TLS_CA_FILE:-$REDIS_TLS_CERT_FILE}"
        echo "tls-auth-clients optional"
    fi
    echo "user default off"
    printf 'user %s on >%s ~* &* +@all\n' "${REDIS_USER:-llmobs}" "$password"
} > "$conf"
unset password
exec redis-server "$conf" "$@"
