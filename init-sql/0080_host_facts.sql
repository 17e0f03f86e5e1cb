-- Facts about the host that only the maintenance pass can see (it runs beside the data), kept in
-- the database so that prometheus-postgres-exporter exposes them in both runtimes
-- (monitoring/postgres-exporter/queries.yml) and Grafana can show them.

-- The filesystems holding the stack's volumes, measured at every maintenance pass.
CREATE TABLE llmobs_volume_usage (
    volume       text PRIMARY KEY,              -- db-data, wal-archive, backup-data
    size_bytes   bigint NOT NULL,
    avail_bytes  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The TLS certificates the stack serves (prod overlay), with their expiry.
CREATE TABLE llmobs_certificates (
    certificate  text PRIMARY KEY,              -- file name under LLMOBS_TLS_DIR
    not_after    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON llmobs_volume_usage, llmobs_certificates TO llmobs_app, llmobs_readonly;
