#!/bin/sh
# Starts Alertmanager in either runtime (the compose `alertmanager` service's entrypoint; the
# local runtime's supervisor runs it too, with the variables below set). Writes its configuration
# (0600: the webhook URL may hold a token) from the settings: one receiver, ALERT_WEBHOOK_URL
# and, with ALERT_EMAIL_TO and ALERT_SMTP_SMARTHOST, e-mail; alerts wait one scrape interval to
# be grouped, resolutions are sent too. Then runs Alertmanager as a single instance.
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
exec "${ALERTMANAGER_BIN:-alertmanager}" --config.file="$run/alertmanager.yml" \
    --storage.path="${ALERTMANAGER_STORAGE:-/alertmanager}" --web.listen-address="${ALERTMANAGER_LISTEN:-:9093}" \
    --cluster.listen-address= "$@"
