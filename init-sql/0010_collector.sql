-- 0010 collector: cache-write prices, and partition creation that is safe under concurrency.

-- Cache writes (Anthropic prompt caching, ...) are priced apart from plain and cached input.
ALTER TABLE model_prices ADD COLUMN IF NOT EXISTS cache_write_per_mtok double precision;

-- Two writers (collector processes, the API) may need the same new day at once. Without a lock,
-- both see no partition and the second CREATE fails on the catalog's unique index. The advisory
-- lock is held to the end of the caller's transaction, so the second caller finds the partition.
CREATE OR REPLACE FUNCTION llmobs_ensure_span_partition(day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := 'spans_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF llmobs_timescale_enabled() OR to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('llmobs_ensure_span_partition'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF spans FOR VALUES FROM (%L) TO (%L)',
                   part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    RETURN true;
END
$$;
