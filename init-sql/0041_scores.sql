-- 0041 scores and feedback on traces: `POST /api/v1/traces/{id}/scores` and the UI's thumbs.
-- A score is numeric (value) or categorical (label). Row-level security as on spans: the api's
-- group role sees and writes only the project set for its session.
CREATE TABLE scores (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  integer NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    trace_id    text NOT NULL CHECK (trace_id ~ '^[0-9a-f]{32}$'),
    span_id     text CHECK (span_id ~ '^[0-9a-f]{16}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    value       double precision,
    label       text CHECK (length(label) BETWEEN 1 AND 100),
    comment     text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
    source      text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'ui', 'eval', 'human')),
    key_id      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (value IS NOT NULL OR label IS NOT NULL)
);
CREATE INDEX scores_trace_idx ON scores (project_id, trace_id, created_at);
CREATE INDEX scores_name_time_idx ON scores (project_id, name, created_at);

ALTER TABLE scores ENABLE ROW LEVEL SECURITY;
CREATE POLICY scores_app_select ON scores FOR SELECT TO llmobs_app
    USING (project_id = llmobs_current_project());
CREATE POLICY scores_app_insert ON scores FOR INSERT TO llmobs_app
    WITH CHECK (project_id = llmobs_current_project());
CREATE POLICY scores_readonly_select ON scores FOR SELECT TO llmobs_readonly
    USING (true);

GRANT SELECT, INSERT ON scores TO llmobs_app;
GRANT SELECT ON scores TO llmobs_readonly;
