#!/bin/sh
# Starts Prometheus in either runtime (the compose `prometheus` service's entrypoint; the local
# runtime's supervisor runs it too, with the LLMOBS_*/PROMETHEUS_* variables below set). Writes
# the configuration from a template and the settings (scrape interval, the targets' addresses,
# BACKUP_MAX_AGE_HOURS as the recording rule llmobs:backup_max_age_seconds), then runs Prometheus.
set -eu

dir="${LLMOBS_MONITORING_DIR:-/etc/llmobs/monitoring}"
run="${LLMOBS_MONITORING_RUN_DIR:-/tmp/llmobs}"
template="${LLMOBS_PROMETHEUS_TEMPLATE:-prometheus.compose.yml}"
seconds="${MONITORING_SCRAPE_INTERVAL_SECONDS:-15}"
timeout=$(( seconds < 10 ? seconds : 10 ))
mkdir -p "$run"
sed -e "s|@INTERVAL@|${seconds}s|g" -e "s|@TIMEOUT@|${timeout}s|g" -e "s|@MONITORING_DIR@|$dir|g" \
    -e "s|@RUN_DIR@|$run|g" -e "s|@PROJECT@|${COMPOSE_PROJECT_NAME:-llm-observatory}|g" \
    -e "s|@ALERTMANAGER@|${LLMOBS_TARGET_ALERTMANAGER:-alertmanager:9093}|g" \
    -e "s|@POSTGRES_EXPORTER@|${LLMOBS_TARGET_POSTGRES_EXPORTER:-postgres-exporter:9187}|g" \
    -e "s|@REDIS_EXPORTER@|${LLMOBS_TARGET_REDIS_EXPORTER:-redis-exporter:9121}|g" \
    -e "s|@PROMETHEUS@|${LLMOBS_TARGET_PROMETHEUS:-localhost:9090}|g" \
    "$dir/prometheus/$template" > "$run/prometheus.yml"
cat > "$run/thresholds.yml" <<RULES
groups:
  - name: llmobs-settings
    rules:
      - record: llmobs:backup_max_age_seconds
        expr: vector($(( ${BACKUP_MAX_AGE_HOURS:-26} * 3600 )))
RULES
exec "${PROMETHEUS_BIN:-prometheus}" --config.file="$run/prometheus.yml" \
    --storage.tsdb.path="${PROMETHEUS_STORAGE:-/prometheus}" --web.listen-address="${PROMETHEUS_LISTEN:-:9090}" \
    --storage.tsdb.retention.time=15d "$@"
