-- 0091 erasure through the API (DELETE /api/v1/users|sessions|traces/{id}) runs as the app's
-- group role under row-level security, and removes a subject's scores with its traces: the role
-- may delete the scores of the project set for its session. Skipped where there is no scores
-- table (it comes with 0041).
DO $$
BEGIN
    IF to_regclass('scores') IS NOT NULL THEN
        GRANT DELETE ON scores TO llmobs_app;
        IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'scores' AND policyname = 'scores_app_delete') THEN
            CREATE POLICY scores_app_delete ON scores FOR DELETE TO llmobs_app
                USING (project_id = llmobs_current_project());
        END IF;
    END IF;
END
$$;
