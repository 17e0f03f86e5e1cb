-- 0001 core schema: roles, projects, API keys, audit log, model prices, spans.
--
-- Runs on plain PostgreSQL 15+ and on TimescaleDB. The TimescaleDB path is taken only when the
-- extension is available *and* preloaded; otherwise spans are natively range-partitioned by day.
-- `llmobs db migrate` runs each file in one transaction and records it in llmobs_schema_migrations.

-- Roles -----------------------------------------------------------------------------------------
-- llmobs_app      group role (NOLOGIN) of the api and collector; login roles llmobs_app_a/_b are
--                 members of it, so `secrets rotate db` can alternate between them.
-- llmobs_readonly login role for Grafana (SELECT only); its password is set by `llmobs up`.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llmobs_app') THEN
        CREATE ROLE llmobs_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llmobs_readonly') THEN
        CREATE ROLE llmobs_readonly NOLOGIN;
    END IF;
END
$$;

-- Whether this database takes the TimescaleDB path. Stable for the life of the database.
CREATE FUNCTION llmobs_timescale_enabled() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;
END
$$;

-- Projects and keys -----------------------------------------------------------------------------
CREATE TABLE projects (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,                 -- the public part of the key
    project_id    integer NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          text NOT NULL DEFAULT '',
    role          text NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    key_hash      text NOT NULL,                    -- sha256 of the whole token, never the token
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_project_idx ON api_keys (project_id);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    project_id  integer REFERENCES projects (id) ON DELETE SET NULL,
    actor       text NOT NULL,                      -- key id, "cli:<os user>", ...
    action      text NOT NULL,                      -- "key.create", "key.revoke", "restore", ...
    target      text,
    source      text,                               -- client address or host name
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);

-- Model prices (rows are seeded and managed by the collector's pricing) --------------------------
-- Prices are USD per one million tokens. A row applies to spans whose model matches
-- model_pattern (a case-insensitive regex), optionally only for one provider, from valid_from on.
-- Project rows override global rows (project_id NULL).
CREATE TABLE model_prices (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id           integer REFERENCES projects (id) ON DELETE CASCADE,
    provider             text,
    model_pattern        text NOT NULL,
    input_per_mtok       double precision NOT NULL DEFAULT 0,
    output_per_mtok      double precision NOT NULL DEFAULT 0,
    cached_input_per_mtok double precision,
    reasoning_per_mtok   double precision,
    valid_from           date NOT NULL DEFAULT DATE '2000-01-01',
    source               text NOT NULL DEFAULT 'seed',
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX model_prices_key ON model_prices
    (COALESCE(project_id, 0), COALESCE(provider, ''), model_pattern, valid_from);

-- Spans -----------------------------------------------------------------------------------------
-- Ids are lowercase hex (trace 32 chars, span 16). Token counts are as reported by the client.
-- cost_usd is the client's cost when it sent one (cost_source 'client') or priced from
-- model_prices ('computed'); NULL when the model has no price.
DO $$
DECLARE
    columns constant text := $cols$
        project_id            integer NOT NULL,
        trace_id              text NOT NULL,
        span_id               text NOT NULL,
        parent_span_id        text,
        service_name          text NOT NULL DEFAULT 'unknown',
        environment           text,
        scope_name            text,
        name                  text NOT NULL,
        kind                  text NOT NULL DEFAULT 'internal',
        start_time            timestamptz NOT NULL,
        end_time              timestamptz NOT NULL,
        duration_ms           double precision NOT NULL,
        status_code           text NOT NULL DEFAULT 'unset',
        status_message        text,
        provider              text,
        request_model         text,
        response_model        text,
        operation             text,
        input_tokens          bigint,
        output_tokens         bigint,
        total_tokens          bigint,
        cached_input_tokens   bigint,
        reasoning_tokens      bigint,
        cost_usd              double precision,
        cost_source           text,
        session_id            text,
        user_id               text,
        finish_reasons        text[],
        attributes            jsonb NOT NULL DEFAULT '{}',
        events                jsonb NOT NULL DEFAULT '[]',
        resource              jsonb NOT NULL DEFAULT '{}',
        ingested_at           timestamptz NOT NULL DEFAULT now()
    $cols$;
BEGIN
    IF llmobs_timescale_enabled() THEN
        EXECUTE format('CREATE TABLE spans (%s)', columns);
        PERFORM create_hypertable('spans', 'start_time', chunk_time_interval => interval '1 day');
        EXECUTE 'ALTER TABLE spans SET (timescaledb.compress, timescaledb.compress_segmentby = ''project_id'','
                || ' timescaledb.compress_orderby = ''start_time DESC'')';
        PERFORM add_compression_policy('spans', interval '7 days');
    ELSE
        EXECUTE format('CREATE TABLE spans (%s) PARTITION BY RANGE (start_time)', columns);
    END IF;
END
$$;

CREATE INDEX spans_trace_idx ON spans (project_id, trace_id);
CREATE INDEX spans_time_idx ON spans (project_id, start_time DESC);

-- Daily partitions (plain PostgreSQL path). Names are spans_pYYYYMMDD, bounds are UTC days.
-- SECURITY DEFINER: the collector (app role) may call it, and partitions stay owned by the admin.
CREATE FUNCTION llmobs_ensure_span_partition(day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := 'spans_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF llmobs_timescale_enabled() OR to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF spans FOR VALUES FROM (%L) TO (%L)',
                   part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    RETURN true;
END
$$;

-- Latency histograms --------------------------------------------------------------------------
-- 64 log-spaced buckets from 0.5 ms to 10 min, plus an underflow (index 1) and an overflow
-- (index 66) bucket: the same layout as TimescaleDB's histogram(ln(ms), ln(0.5), ln(600000), 64),
-- so rollups merge and percentiles read the same on both paths. Error of a percentile: one
-- bucket, about 25 %.
CREATE FUNCTION llmobs_latency_bucket(duration_ms double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN duration_ms IS NULL OR duration_ms < 0.5 THEN 1
        WHEN duration_ms >= 600000 THEN 66
        ELSE 2 + floor((ln(duration_ms) - ln(0.5)) / ((ln(600000) - ln(0.5)) / 64))::integer
    END
$$;

CREATE FUNCTION llmobs_hist_add(hist integer[], duration_ms double precision) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    b integer := llmobs_latency_bucket(duration_ms);
BEGIN
    IF hist IS NULL THEN
        hist := array_fill(0, ARRAY[66]);
    END IF;
    hist[b] := hist[b] + 1;
    RETURN hist;
END
$$;

CREATE FUNCTION llmobs_hist_merge(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a
           ELSE ARRAY(SELECT x + y FROM unnest(a, b) AS t(x, y)) END
$$;

CREATE AGGREGATE llmobs_latency_hist(double precision) (
    SFUNC = llmobs_hist_add, STYPE = integer[], COMBINEFUNC = llmobs_hist_merge, PARALLEL = SAFE
);
CREATE AGGREGATE llmobs_hist_sum(integer[]) (
    SFUNC = llmobs_hist_merge, STYPE = integer[], COMBINEFUNC = llmobs_hist_merge, PARALLEL = SAFE
);

-- The q-quantile (0..1) of a histogram, in ms: the geometric middle of the bucket holding it.
CREATE FUNCTION llmobs_hist_quantile(hist integer[], q double precision) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total bigint := 0;
    seen bigint := 0;
    step constant double precision := (ln(600000) - ln(0.5)) / 64;
    i integer;
BEGIN
    IF hist IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT sum(x) INTO total FROM unnest(hist) AS x;
    IF total IS NULL OR total = 0 THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. array_length(hist, 1) LOOP
        seen := seen + hist[i];
        IF seen >= greatest(1, ceil(q * total)) THEN
            IF i = 1 THEN RETURN 0.5; END IF;
            IF i = 66 THEN RETURN 600000; END IF;
            RETURN exp(ln(0.5) + (i - 2 + 0.5) * step);
        END IF;
    END LOOP;
    RETURN 600000;
END
$$;

-- Rollups -------------------------------------------------------------------------------------
-- spans_rollup_1m and spans_rollup_1h: per bucket, project, service, provider and model.
-- TimescaleDB: continuous aggregates with refresh policies. Plain PostgreSQL: tables refreshed
-- incrementally by `llmobs db maintain` (llmobs_refresh_rollups).
DO $$
DECLARE
    agg_columns constant text := $agg$
        project_id,
        service_name,
        COALESCE(provider, '') AS provider,
        COALESCE(response_model, request_model, '') AS model,
        count(*) AS requests,
        count(*) FILTER (WHERE status_code = 'error') AS errors,
        COALESCE(sum(input_tokens), 0) AS input_tokens,
        COALESCE(sum(output_tokens), 0) AS output_tokens,
        COALESCE(sum(total_tokens), 0) AS total_tokens,
        COALESCE(sum(cached_input_tokens), 0) AS cached_input_tokens,
        COALESCE(sum(reasoning_tokens), 0) AS reasoning_tokens,
        COALESCE(sum(cost_usd), 0) AS cost_usd,
        sum(duration_ms) AS duration_sum_ms,
        max(duration_ms) AS duration_max_ms
    $agg$;
BEGIN
    IF llmobs_timescale_enabled() THEN
        EXECUTE format($v$
            CREATE MATERIALIZED VIEW spans_rollup_1m WITH (timescaledb.continuous) AS
            SELECT time_bucket('1 minute', start_time) AS bucket, %s,
                   histogram(ln(greatest(duration_ms, 0.0001)), ln(0.5), ln(600000), 64) AS latency_hist
            FROM spans GROUP BY 1, 2, 3, 4, 5 WITH NO DATA$v$, agg_columns);
        EXECUTE format($v$
            CREATE MATERIALIZED VIEW spans_rollup_1h WITH (timescaledb.continuous) AS
            SELECT time_bucket('1 hour', start_time) AS bucket, %s,
                   histogram(ln(greatest(duration_ms, 0.0001)), ln(0.5), ln(600000), 64) AS latency_hist
            FROM spans GROUP BY 1, 2, 3, 4, 5 WITH NO DATA$v$, agg_columns);
        PERFORM add_continuous_aggregate_policy('spans_rollup_1m', start_offset => interval '2 hours',
            end_offset => interval '1 minute', schedule_interval => interval '1 minute');
        PERFORM add_continuous_aggregate_policy('spans_rollup_1h', start_offset => interval '1 day',
            end_offset => interval '1 minute', schedule_interval => interval '5 minutes');
    ELSE
        EXECUTE $t$
            CREATE TABLE spans_rollup_1m (
                bucket               timestamptz NOT NULL,
                project_id           integer NOT NULL,
                service_name         text NOT NULL,
                provider             text NOT NULL,
                model                text NOT NULL,
                requests             bigint NOT NULL,
                errors               bigint NOT NULL,
                input_tokens         numeric NOT NULL,
                output_tokens        numeric NOT NULL,
                total_tokens         numeric NOT NULL,
                cached_input_tokens  numeric NOT NULL,
                reasoning_tokens     numeric NOT NULL,
                cost_usd             double precision NOT NULL,
                duration_sum_ms      double precision,
                duration_max_ms      double precision,
                latency_hist         integer[],
                PRIMARY KEY (project_id, bucket, service_name, provider, model)
            )$t$;
        EXECUTE 'CREATE TABLE spans_rollup_1h (LIKE spans_rollup_1m INCLUDING ALL)';
        EXECUTE 'CREATE INDEX spans_rollup_1m_bucket_idx ON spans_rollup_1m (bucket)';
        EXECUTE 'CREATE INDEX spans_rollup_1h_bucket_idx ON spans_rollup_1h (bucket)';
    END IF;
END
$$;

-- Watermark of the plain-PostgreSQL rollup refresh.
CREATE TABLE llmobs_rollup_state (
    name           text PRIMARY KEY,
    refreshed_to   timestamptz NOT NULL,
    refreshed_at   timestamptz NOT NULL DEFAULT now()
);

-- Recompute rollup buckets from `since` on (plain PostgreSQL path): minute buckets from spans,
-- hour buckets from minute buckets. Returns the number of minute rows written.
CREATE FUNCTION llmobs_refresh_rollups(since timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    m_from constant timestamptz := date_trunc('minute', since);
    h_from constant timestamptz := date_trunc('hour', since);
    written bigint;
BEGIN
    IF llmobs_timescale_enabled() THEN
        RETURN 0;
    END IF;
    DELETE FROM spans_rollup_1m WHERE bucket >= m_from;
    INSERT INTO spans_rollup_1m
    SELECT date_trunc('minute', start_time), project_id, service_name, COALESCE(provider, ''),
           COALESCE(response_model, request_model, ''), count(*),
           count(*) FILTER (WHERE status_code = 'error'),
           COALESCE(sum(input_tokens), 0), COALESCE(sum(output_tokens), 0), COALESCE(sum(total_tokens), 0),
           COALESCE(sum(cached_input_tokens), 0), COALESCE(sum(reasoning_tokens), 0),
           COALESCE(sum(cost_usd), 0), sum(duration_ms), max(duration_ms), llmobs_latency_hist(duration_ms)
    FROM spans WHERE start_time >= m_from
    GROUP BY 1, 2, 3, 4, 5;
    GET DIAGNOSTICS written = ROW_COUNT;

    DELETE FROM spans_rollup_1h WHERE bucket >= h_from;
    INSERT INTO spans_rollup_1h
    SELECT date_trunc('hour', bucket), project_id, service_name, provider, model, sum(requests), sum(errors),
           sum(input_tokens), sum(output_tokens), sum(total_tokens), sum(cached_input_tokens),
           sum(reasoning_tokens), sum(cost_usd), sum(duration_sum_ms), max(duration_max_ms),
           llmobs_hist_sum(latency_hist)
    FROM spans_rollup_1m WHERE bucket >= h_from
    GROUP BY 1, 2, 3, 4, 5;
    RETURN written;
END
$$;

-- Privileges ------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA public TO llmobs_app, llmobs_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO llmobs_app, llmobs_readonly;
GRANT INSERT, UPDATE, DELETE ON spans, api_keys, audit_log, projects TO llmobs_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO llmobs_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO llmobs_app, llmobs_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO llmobs_app;
