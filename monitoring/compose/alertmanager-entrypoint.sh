#!/bin/sh
# Entrypoint of the compose `alertmanager` service: writes its configuration from the settings
# (one receiver: ALERT_WEBHOOK_URL and, with ALERT_EMAIL_TO and ALERT_SMTP_SMARTHOST, e-mail;
# alerts wait one scrape interval to be grouped), then runs Alertmanager as a single instance.
# The local runtime writes the same from llmobs/stack/monitoring.py.
set -eu

run="${LLMOBS_MONITORING_RUN_DIR:-/tmp/llmobs}"
mkdir -p "$run"
umask 077
{
    echo "route:"
    echo "  receiver: llmobs"
    echo "  group_by: [alertname, job]"
    echo "  group_wait: ${MONITORING_SCRAPE_INTERVAL_SECONDS:-15}s"
    echo "  group_interval: 1m"
    echo "  repeat_interval: 4h"
    echo "receivers:"
    echo "  - name: llmobs"
    if [ -n "${ALERT_WEBHOOK_URL:-}" ]; then
        echo "    webhook_configs:"
        echo "      - url: \"$ALERT_WEBHOOK_URL\""
        echo "        send_resolved: true"
    fi
    if [ -n "${ALERT_EMAIL_TO:-}" ] && [ -n "${ALERT_SMTP_SMARTHOST:-}" ]; then
        echo "    email_configs:"
        echo "      - to: \"$ALERT_EMAIL_TO\""
        echo "        from: \"${ALERT_EMAIL_FROM:-alertmanager@llmobs.local}\""
        echo "        smarthost: \"$ALERT_SMTP_SMARTHOST\""
        echo "        send_resolved: true"
        echo "        require_tls: false"
    fi
} > "$run/alertmanager.yml"
exec "${ALERTMANAGER_BIN:-alertmanager}" --config.file="$run/alertmanager.yml" --storage.path=/alertmanager \
    --web.listen-address=:9093 --cluster.listen-address= "$@"
