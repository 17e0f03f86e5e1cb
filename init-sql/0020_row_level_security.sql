-- 0020 row-level security: the app role sees and changes only the spans of the project set for
-- the current transaction; Grafana's readonly role reads everything.
--
-- The API runs its transactions as the group role llmobs_app (`SET ROLE llmobs_app` on each
-- connection) and sets the caller's project with set_config('llmobs.project_id', id, true). With
-- no project set, current_setting(..., true) is NULL and no row matches.
--
-- PostgreSQL refuses `COPY FROM` into a table with row-level security for any role the policies
-- apply to ("COPY FROM not supported with row-level security"). The collector group-commits the
-- spans of several projects in one COPY, so its login roles (llmobs_app_a/_b, members of
-- llmobs_app) carry BYPASSRLS: a login role bypasses, the group role it switches to does not.
-- They are created here (NOLOGIN) when missing; `llmobs up` gives the active one LOGIN and its
-- password, and ALTER ROLE keeps the attribute.

DO $$
DECLARE
    login_role text;
BEGIN
    FOREACH login_role IN ARRAY ARRAY['llmobs_app_a', 'llmobs_app_b'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = login_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', login_role);
        END IF;
        EXECUTE format('ALTER ROLE %I BYPASSRLS', login_role);
        EXECUTE format('GRANT llmobs_app TO %I', login_role);
    END LOOP;
END
$$;

-- The project of the current transaction, NULL when none is set (or it is not a number).
CREATE FUNCTION llmobs_current_project() RETURNS integer LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN current_setting('llmobs.project_id', true) ~ '^[0-9]{1,9}$'
                THEN current_setting('llmobs.project_id', true)::integer END
$$;

ALTER TABLE spans ENABLE ROW LEVEL SECURITY;

CREATE POLICY spans_app_select ON spans FOR SELECT TO llmobs_app
    USING (project_id = llmobs_current_project());
-- Any project: the collector writes several projects in one transaction.
CREATE POLICY spans_app_insert ON spans FOR INSERT TO llmobs_app
    WITH CHECK (true);
CREATE POLICY spans_app_update ON spans FOR UPDATE TO llmobs_app
    USING (project_id = llmobs_current_project())
    WITH CHECK (project_id = llmobs_current_project());
CREATE POLICY spans_app_delete ON spans FOR DELETE TO llmobs_app
    USING (project_id = llmobs_current_project());
CREATE POLICY spans_readonly_select ON spans FOR SELECT TO llmobs_readonly
    USING (true);

-- Rollups: tables on plain PostgreSQL (refreshed by the superuser, who bypasses RLS). On
-- TimescaleDB they are continuous aggregates, which are views and take no policies.
DO $$
DECLARE
    rollup text;
BEGIN
    FOREACH rollup IN ARRAY ARRAY['spans_rollup_1m', 'spans_rollup_1h'] LOOP
        IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass(rollup) AND relkind IN ('r', 'p')) THEN
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', rollup);
            EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO llmobs_app '
                           'USING (project_id = llmobs_current_project())', rollup || '_app_select', rollup);
            EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO llmobs_readonly USING (true)',
                           rollup || '_readonly_select', rollup);
        END IF;
    END LOOP;
END
$$;
