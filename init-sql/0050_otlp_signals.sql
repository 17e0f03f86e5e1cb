-- 0050 OTLP logs and metrics: log records (GenAI events among them) and metric data points.
--
-- Both tables are partitioned by UTC day like spans (hypertables on TimescaleDB), created ahead
-- and dropped for RETENTION_DAYS by `llmobs db maintain`, and scoped to a project by the same
-- row-level security. The collector's login roles bypass RLS to COPY several projects at once.

-- Log records ----------------------------------------------------------------------------------
-- time: the record's time, else its observed time, else when the collector received it.
-- trace_id / span_id: lowercase hex, NULL when the record belongs to no span. body: the OTLP
-- AnyValue as JSON (a string, a number, an object, a list). event_name: the record's event_name
-- field or its `event.name` attribute (GenAI events: gen_ai.user.message, gen_ai.choice, ...).
DO $$
DECLARE
    log_columns constant text := $cols$
        project_id       integer NOT NULL,
        time             timestamptz NOT NULL,
        observed_time    timestamptz,
        trace_id         text,
        span_id          text,
        service_name     text NOT NULL DEFAULT 'unknown',
        scope_name       text,
        severity_number  smallint,
        severity_text    text,
        event_name       text,
        body             jsonb,
        attributes       jsonb NOT NULL DEFAULT '{}',
        resource         jsonb NOT NULL DEFAULT '{}',
        ingested_at      timestamptz NOT NULL DEFAULT now()
    $cols$;
    -- One row per data point. Histograms keep their count (hist_count), sum, min, max and explicit
    -- buckets (bounds, counts: one more count than bounds); sums and gauges their value. The attributes that matter for GenAI have
    -- columns; all attributes stay in `attributes`. series_key identifies a series (metric,
    -- attributes, resource, start time) so cumulative points can be turned into deltas.
    metric_columns constant text := $cols$
        project_id       integer NOT NULL,
        time             timestamptz NOT NULL,
        start_time       timestamptz,
        name             text NOT NULL,
        unit             text,
        kind             text NOT NULL CHECK (kind IN ('sum', 'gauge', 'histogram')),
        temporality      text NOT NULL CHECK (temporality IN ('delta', 'cumulative', 'unspecified')),
        service_name     text NOT NULL DEFAULT 'unknown',
        provider         text,
        model            text,
        operation        text,
        token_type       text,
        series_key       text NOT NULL,
        value            double precision,
        hist_count       bigint,
        sum              double precision,
        min              double precision,
        max              double precision,
        bounds           double precision[],
        counts           bigint[],
        attributes       jsonb NOT NULL DEFAULT '{}',
        ingested_at      timestamptz NOT NULL DEFAULT now()
    $cols$;
BEGIN
    IF llmobs_timescale_enabled() THEN
        EXECUTE format('CREATE TABLE log_records (%s)', log_columns);
        PERFORM create_hypertable('log_records', 'time', chunk_time_interval => interval '1 day');
        EXECUTE format('CREATE TABLE metric_points (%s)', metric_columns);
        PERFORM create_hypertable('metric_points', 'time', chunk_time_interval => interval '1 day');
    ELSE
        EXECUTE format('CREATE TABLE log_records (%s) PARTITION BY RANGE (time)', log_columns);
        EXECUTE format('CREATE TABLE metric_points (%s) PARTITION BY RANGE (time)', metric_columns);
    END IF;
END
$$;

CREATE INDEX log_records_trace_idx ON log_records (project_id, trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX log_records_span_idx ON log_records (project_id, span_id) WHERE span_id IS NOT NULL;
CREATE INDEX log_records_time_idx ON log_records (project_id, time DESC);
CREATE INDEX metric_points_name_time_idx ON metric_points (project_id, name, time);

-- Daily partitions of log_records and metric_points (plain PostgreSQL path): <table>_pYYYYMMDD.
-- As llmobs_ensure_span_partition: callable by the collector, owned by the admin, serialized.
CREATE FUNCTION llmobs_ensure_signal_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF parent NOT IN ('log_records', 'metric_points') THEN
        RAISE EXCEPTION 'not a signal table: %', parent;
    END IF;
    IF llmobs_timescale_enabled() OR to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('llmobs_ensure_signal_partition'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   part, parent, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    RETURN true;
END
$$;

GRANT SELECT, INSERT, DELETE ON log_records, metric_points TO llmobs_app;
GRANT SELECT ON log_records, metric_points TO llmobs_readonly;

ALTER TABLE log_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE metric_points ENABLE ROW LEVEL SECURITY;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['log_records', 'metric_points'] LOOP
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO llmobs_app '
                       'USING (project_id = llmobs_current_project())', t || '_app_select', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR INSERT TO llmobs_app WITH CHECK (true)', t || '_app_insert', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR DELETE TO llmobs_app '
                       'USING (project_id = llmobs_current_project())', t || '_app_delete', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO llmobs_readonly USING (true)',
                       t || '_readonly_select', t);
    END LOOP;
END
$$;

-- Metric points as deltas, for one metric in a time range: what the API's series and Grafana's
-- panels aggregate. A cumulative point minus the previous point of its series (looked up to an
-- hour before the range); the first point of a series, or one after a counter reset, counts whole.
-- Gauges keep their value. Histogram bucket counts are subtracted bucket by bucket.
CREATE FUNCTION llmobs_metric_deltas(metric text, range_from timestamptz, range_to timestamptz)
RETURNS TABLE (
    project_id integer, point_time timestamptz, service_name text, provider text, model text, operation text,
    token_type text, kind text, unit text, value double precision, count bigint, sum double precision,
    min double precision, max double precision, bounds double precision[], counts bigint[]
) LANGUAGE sql STABLE AS $$
    WITH points AS (
        SELECT p.*,
               lag(p.hist_count) OVER w AS prev_count, lag(p.sum) OVER w AS prev_sum,
               lag(p.value) OVER w AS prev_value, lag(p.counts) OVER w AS prev_counts
        FROM metric_points p
        WHERE p.name = metric AND p.time >= range_from - interval '1 hour' AND p.time < range_to
        WINDOW w AS (PARTITION BY p.project_id, p.series_key ORDER BY p.time)
    )
    SELECT project_id, time, service_name, provider, model, operation, token_type, kind, unit,
           CASE WHEN kind = 'sum' AND temporality = 'cumulative' AND prev_value <= value
                THEN value - prev_value ELSE value END,
           CASE WHEN temporality = 'cumulative' AND prev_count <= hist_count THEN hist_count - prev_count
                ELSE hist_count END,
           CASE WHEN temporality = 'cumulative' AND prev_count <= hist_count THEN sum - prev_sum ELSE sum END,
           min, max, bounds,
           CASE WHEN temporality = 'cumulative' AND prev_count <= hist_count
                     AND cardinality(prev_counts) = cardinality(counts)
                THEN ARRAY(SELECT c - q FROM unnest(counts, prev_counts) AS u(c, q))
                ELSE counts END
    FROM points
    WHERE time >= range_from
$$;
GRANT EXECUTE ON FUNCTION llmobs_metric_deltas(text, timestamptz, timestamptz) TO llmobs_app, llmobs_readonly;
