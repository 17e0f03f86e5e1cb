-- 0061 as 0060 for the OTLP signals: the partitions of log_records and metric_points are made by
-- `llmobs db maintain` only (the collector rejects records outside the accepted window), so the
-- app role may not call the SECURITY DEFINER function that creates them.
REVOKE EXECUTE ON FUNCTION llmobs_ensure_signal_partition(text, date) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llmobs_app') THEN
        REVOKE EXECUTE ON FUNCTION llmobs_ensure_signal_partition(text, date) FROM llmobs_app;
    END IF;
END
$$;
