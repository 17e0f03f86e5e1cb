-- 0021 indexes for the API's reads.
--
-- Traces are listed by their root span: a partial index on root spans by project and start time
-- serves the default (newest first) listing and its cursor paging without touching child spans.
CREATE INDEX IF NOT EXISTS spans_root_time_idx ON spans (project_id, start_time DESC)
    WHERE parent_span_id IS NULL;

-- GET /api/v1/spans/{span_id}.
CREATE INDEX IF NOT EXISTS spans_span_idx ON spans (project_id, span_id);

-- GET /api/v1/audit (one project's entries, newest first).
CREATE INDEX IF NOT EXISTS audit_log_project_at_idx ON audit_log (project_id, at DESC);

-- The rollup the Grafana dashboards read for a time range: hours for ranges over a day, minutes
-- otherwise. An inlinable SQL function, so the caller's filters reach the rollup's indexes, on
-- plain PostgreSQL (tables) and TimescaleDB (continuous aggregates) alike.
CREATE FUNCTION llmobs_rollup(range_from timestamptz, range_to timestamptz)
RETURNS SETOF spans_rollup_1m LANGUAGE sql STABLE AS $$
    SELECT * FROM spans_rollup_1h
    WHERE range_to - range_from > interval '1 day'
      AND bucket >= date_trunc('hour', range_from) AND bucket < range_to
    UNION ALL
    SELECT * FROM spans_rollup_1m
    WHERE range_to - range_from <= interval '1 day'
      AND bucket >= date_trunc('minute', range_from) AND bucket < range_to
$$;
GRANT EXECUTE ON FUNCTION llmobs_rollup(timestamptz, timestamptz) TO llmobs_app, llmobs_readonly;

-- Grafana's queries are interactive and short: JIT compilation would cost more than it saves.
ALTER ROLE llmobs_readonly SET jit = off;
