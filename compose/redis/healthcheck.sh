#!/bin/sh
# Healthcheck of the redis service: PING as REDIS_USER. The password reaches redis-cli through
# REDISCLI_AUTH, never its arguments.
set -eu
REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE")"
export REDISCLI_AUTH
redis-cli --user "${REDIS_USER:-llmobs}" -h 127.0.0.1 -p 6379 ping | grep -q PONG
