-- 0090 data lifecycle: retention per project, and lookups for erasure by user or session.
--
-- retention_days: days a project's spans are kept; NULL follows RETENTION_DAYS.
-- rollup_retention_days: days its minute/hour rollups are kept; NULL follows ROLLUP_RETENTION_DAYS
-- (0 there: forever). Rollups may outlive spans, never the other way round.
-- `llmobs db maintain` enforces both (llmobs/store/retention.py).
ALTER TABLE projects
    ADD COLUMN retention_days integer CHECK (retention_days BETWEEN 1 AND 36500),
    ADD COLUMN rollup_retention_days integer CHECK (rollup_retention_days BETWEEN 1 AND 36500),
    ADD CONSTRAINT projects_rollups_outlive_spans
        CHECK (rollup_retention_days IS NULL OR retention_days IS NULL OR rollup_retention_days >= retention_days);

-- `llmobs erase --user/--session` and DELETE /api/v1/users|sessions/{id} find a subject's traces
-- through these (partial: spans without a user or session cost them nothing).
CREATE INDEX IF NOT EXISTS spans_user_idx ON spans (project_id, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_session_idx ON spans (project_id, session_id) WHERE session_id IS NOT NULL;
