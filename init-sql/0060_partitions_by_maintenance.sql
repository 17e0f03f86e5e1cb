-- 0060 partitions are made by maintenance only: `llmobs db maintain` (a superuser) creates one
-- ahead of time for every day of the accepted span window. Writers (the app role) may no longer
-- create them, so a client's timestamp cannot make the database grow tables.
REVOKE EXECUTE ON FUNCTION llmobs_ensure_span_partition(date) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llmobs_app') THEN
        REVOKE EXECUTE ON FUNCTION llmobs_ensure_span_partition(date) FROM llmobs_app;
    END IF;
END
$$;
