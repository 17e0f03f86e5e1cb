-- 0030 LLM messages and time to first token on spans, a search index over the messages, time to
-- first token in the rollups.
--
-- input_messages / output_messages: [{"role", "parts": [...], "finish_reason", "truncated"?}] as
-- the collector maps them from every convention (llmobs/collector/messages.py); NULL when a span
-- carries none (the API serves an empty list). Nullable columns without a default: adding them
-- does not rewrite the table.
ALTER TABLE spans
    ADD COLUMN input_messages jsonb,
    ADD COLUMN output_messages jsonb,
    ADD COLUMN time_to_first_token_ms double precision;

-- The words of the messages' text parts, for `GET /api/v1/traces?q=`. 'simple': no stemming and
-- no stop words, so any language and identifiers are found as written.
CREATE FUNCTION llmobs_messages_tsv(input jsonb, output jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_to_tsvector('simple'::regconfig,
        jsonb_build_array(jsonb_path_query_array(input, '$[*].parts[*] ? (@.type == "text").content'),
                          jsonb_path_query_array(output, '$[*].parts[*] ? (@.type == "text").content')),
        '["string"]')
$$;

-- The search index, beside spans rather than on them: building a tsvector and its GIN entries for
-- every LLM span as it is written would cost the collector most of its throughput (bench/ingest.py),
-- so `llmobs db maintain` (every MAINTAIN_INTERVAL_SECONDS) indexes the spans written since its last
-- pass, as it refreshes the rollups. Retention deletes what it drops from spans.
CREATE TABLE span_search (
    project_id  integer NOT NULL,
    trace_id    text NOT NULL,
    span_id     text NOT NULL,
    start_time  timestamptz NOT NULL,
    words       tsvector NOT NULL,
    PRIMARY KEY (project_id, span_id, start_time)
);
CREATE INDEX span_search_words_idx ON span_search USING gin (words);
CREATE INDEX span_search_time_idx ON span_search (start_time);

ALTER TABLE span_search ENABLE ROW LEVEL SECURITY;
CREATE POLICY span_search_app_select ON span_search FOR SELECT TO llmobs_app
    USING (project_id = llmobs_current_project());
CREATE POLICY span_search_readonly_select ON span_search FOR SELECT TO llmobs_readonly USING (true);
GRANT SELECT ON span_search TO llmobs_app, llmobs_readonly;

-- Index the messages of spans starting from `since` that are not indexed yet; the number indexed.
CREATE FUNCTION llmobs_index_messages(since timestamptz) RETURNS bigint LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO span_search (project_id, trace_id, span_id, start_time, words)
        SELECT s.project_id, s.trace_id, s.span_id, s.start_time,
               llmobs_messages_tsv(s.input_messages, s.output_messages)
        FROM spans s
        WHERE s.start_time >= since AND (s.input_messages IS NOT NULL OR s.output_messages IS NOT NULL)
          AND NOT EXISTS (SELECT 1 FROM span_search x WHERE x.project_id = s.project_id
                          AND x.span_id = s.span_id AND x.start_time = s.start_time)
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) FROM added
$$;

-- Rollups: spans with a time to first token, its sum and its histogram (same buckets as latency).
DO $$
BEGIN
    IF llmobs_timescale_enabled() THEN
        -- Continuous aggregates cannot gain columns: they are defined again with the new ones.
        DROP FUNCTION IF EXISTS llmobs_rollup(timestamptz, timestamptz);
        DROP MATERIALIZED VIEW IF EXISTS spans_rollup_1h;
        DROP MATERIALIZED VIEW IF EXISTS spans_rollup_1m;
        EXECUTE $v$
            CREATE MATERIALIZED VIEW spans_rollup_1m WITH (timescaledb.continuous) AS
            SELECT time_bucket('1 minute', start_time) AS bucket, project_id, service_name,
                COALESCE(provider, '') AS provider, COALESCE(response_model, request_model, '') AS model,
                count(*) AS requests, count(*) FILTER (WHERE status_code = 'error') AS errors,
                COALESCE(sum(input_tokens), 0) AS input_tokens, COALESCE(sum(output_tokens), 0) AS output_tokens,
                COALESCE(sum(total_tokens), 0) AS total_tokens,
                COALESCE(sum(cached_input_tokens), 0) AS cached_input_tokens,
                COALESCE(sum(reasoning_tokens), 0) AS reasoning_tokens, COALESCE(sum(cost_usd), 0) AS cost_usd,
                sum(duration_ms) AS duration_sum_ms, max(duration_ms) AS duration_max_ms,
                histogram(ln(greatest(duration_ms, 0.0001)), ln(0.5), ln(600000), 64) AS latency_hist,
                count(time_to_first_token_ms) AS ttft_count, sum(time_to_first_token_ms) AS ttft_sum_ms,
                histogram(ln(CASE WHEN time_to_first_token_ms IS NOT NULL
                    THEN greatest(time_to_first_token_ms, 0.0001) END), ln(0.5), ln(600000), 64) AS ttft_hist
            FROM spans GROUP BY 1, 2, 3, 4, 5 WITH NO DATA$v$;
        EXECUTE $v$
            CREATE MATERIALIZED VIEW spans_rollup_1h WITH (timescaledb.continuous) AS
            SELECT time_bucket('1 hour', start_time) AS bucket, project_id, service_name,
                COALESCE(provider, '') AS provider, COALESCE(response_model, request_model, '') AS model,
                count(*) AS requests, count(*) FILTER (WHERE status_code = 'error') AS errors,
                COALESCE(sum(input_tokens), 0) AS input_tokens, COALESCE(sum(output_tokens), 0) AS output_tokens,
                COALESCE(sum(total_tokens), 0) AS total_tokens,
                COALESCE(sum(cached_input_tokens), 0) AS cached_input_tokens,
                COALESCE(sum(reasoning_tokens), 0) AS reasoning_tokens, COALESCE(sum(cost_usd), 0) AS cost_usd,
                sum(duration_ms) AS duration_sum_ms, max(duration_ms) AS duration_max_ms,
                histogram(ln(greatest(duration_ms, 0.0001)), ln(0.5), ln(600000), 64) AS latency_hist,
                count(time_to_first_token_ms) AS ttft_count, sum(time_to_first_token_ms) AS ttft_sum_ms,
                histogram(ln(CASE WHEN time_to_first_token_ms IS NOT NULL
                    THEN greatest(time_to_first_token_ms, 0.0001) END), ln(0.5), ln(600000), 64) AS ttft_hist
            FROM spans GROUP BY 1, 2, 3, 4, 5 WITH NO DATA$v$;
        PERFORM add_continuous_aggregate_policy('spans_rollup_1m', start_offset => interval '2 hours',
            end_offset => interval '1 minute', schedule_interval => interval '1 minute');
        PERFORM add_continuous_aggregate_policy('spans_rollup_1h', start_offset => interval '1 day',
            end_offset => interval '1 minute', schedule_interval => interval '5 minutes');
        GRANT SELECT ON spans_rollup_1m, spans_rollup_1h TO llmobs_app, llmobs_readonly;
    ELSE
        ALTER TABLE spans_rollup_1m ADD COLUMN ttft_count bigint NOT NULL DEFAULT 0,
            ADD COLUMN ttft_sum_ms double precision, ADD COLUMN ttft_hist integer[];
        ALTER TABLE spans_rollup_1h ADD COLUMN ttft_count bigint NOT NULL DEFAULT 0,
            ADD COLUMN ttft_sum_ms double precision, ADD COLUMN ttft_hist integer[];
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION llmobs_rollup(range_from timestamptz, range_to timestamptz)
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

CREATE OR REPLACE FUNCTION llmobs_refresh_rollups(since timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
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
           COALESCE(sum(cost_usd), 0), sum(duration_ms), max(duration_ms), llmobs_latency_hist(duration_ms),
           count(time_to_first_token_ms), sum(time_to_first_token_ms),
           llmobs_latency_hist(time_to_first_token_ms) FILTER (WHERE time_to_first_token_ms IS NOT NULL)
    FROM spans WHERE start_time >= m_from
    GROUP BY 1, 2, 3, 4, 5;
    GET DIAGNOSTICS written = ROW_COUNT;

    DELETE FROM spans_rollup_1h WHERE bucket >= h_from;
    INSERT INTO spans_rollup_1h
    SELECT date_trunc('hour', bucket), project_id, service_name, provider, model, sum(requests), sum(errors),
           sum(input_tokens), sum(output_tokens), sum(total_tokens), sum(cached_input_tokens),
           sum(reasoning_tokens), sum(cost_usd), sum(duration_sum_ms), max(duration_max_ms),
           llmobs_hist_sum(latency_hist), sum(ttft_count), sum(ttft_sum_ms), llmobs_hist_sum(ttft_hist)
    FROM spans_rollup_1m WHERE bucket >= h_from
    GROUP BY 1, 2, 3, 4, 5;
    RETURN written;
END
$$;
