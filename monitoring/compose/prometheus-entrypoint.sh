#!/bin/sh
# Entrypoint of the compose `prometheus` service: writes its configuration from the settings
# (scrape interval, BACKUP_MAX_AGE_HOURS as the recording rule llmobs:backup_max_age_seconds),
# then runs Prometheus. The local runtime writes the same from llmobs/stack/monitoring.py.
set -eu

dir="${LLMOBS_MONITORING_DIR:-/etc/llmobs/monitoring}"
run="${LLMOBS_MONITORING_RUN_DIR:-/tmp/llmobs}"
seconds="${MONITORING_SCRAPE_INTERVAL_SECONDS:-15}"
timeout=$(( seconds < 10 ? seconds : 10 ))
mkdir -p "$run"
sed -e "s|@INTERVAL@|${seconds}s|g" -e "s|@TIMEOUT@|${timeout}s|g" -e "s|@MONITORING_DIR@|$dir|g" \
    -e "s|@RUN_DIR@|$run|g" -e "s|@PROJECT@|${COMPOSE_PROJECT_NAME:-llm-observatory}|g" \
    "$dir/prometheus/prometheus.compose.yml" > "$run/prometheus.yml"
cat > "$run/thresholds.yml" <<RULES
groups:
  - name: llmobs-settings
    rules:
      - record: llmobs:backup_max_age_seconds
        expr: vector($(( ${BACKUP_MAX_AGE_HOURS:-26} * 3600 )))
RULES
exec "${PROMETHEUS_BIN:-prometheus}" --config.file="$run/prometheus.yml" --storage.tsdb.path=/prometheus \
    --web.listen-address=:9090 --storage.tsdb.retention.time=15d "$@"
