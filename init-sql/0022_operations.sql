-- 0022 facts for the Operations dashboard that PostgreSQL does not keep by itself.
--
-- llmobs_ingest_stats: spans accepted, rejected (invalid) and refused (retryable: queue full,
-- database down) per minute, project and source. Writers add to the current minute with
-- llmobs_count_ingest(); project 0 stands for "not known" (refused before authentication).
CREATE TABLE llmobs_ingest_stats (
    bucket      timestamptz NOT NULL,
    project_id  integer NOT NULL DEFAULT 0,
    source      text NOT NULL,                  -- api, collector-grpc, collector-http
    accepted    bigint NOT NULL DEFAULT 0,
    rejected    bigint NOT NULL DEFAULT 0,
    refused     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, project_id, source)
);

CREATE FUNCTION llmobs_count_ingest(p_source text, p_project integer, p_accepted bigint, p_rejected bigint,
                                    p_refused bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO llmobs_ingest_stats AS s (bucket, project_id, source, accepted, rejected, refused)
    VALUES (date_trunc('minute', now()), COALESCE(p_project, 0), p_source, p_accepted, p_rejected, p_refused)
    ON CONFLICT (bucket, project_id, source) DO UPDATE
    SET accepted = s.accepted + EXCLUDED.accepted, rejected = s.rejected + EXCLUDED.rejected,
        refused = s.refused + EXCLUDED.refused
$$;

-- llmobs_backups: one row per finished backup (written by `llmobs backup`), so the dashboard can
-- show the age of the last good one.
CREATE TABLE llmobs_backups (
    id           text PRIMARY KEY,
    kind         text NOT NULL,                 -- logical, physical
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    status       text NOT NULL,                 -- ok, failed
    size_bytes   bigint,
    location     text
);
CREATE INDEX llmobs_backups_finished_idx ON llmobs_backups (finished_at DESC);

GRANT SELECT, INSERT, UPDATE ON llmobs_ingest_stats, llmobs_backups TO llmobs_app;
GRANT SELECT ON llmobs_ingest_stats, llmobs_backups TO llmobs_readonly;
