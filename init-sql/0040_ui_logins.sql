-- 0040 one-time sign-in links for the web UI (`llmobs ui`). Only the SHA-256 of a link's token is
-- stored; a link signs in as the API key it names, once, before it expires. Like api_keys this is
-- a control table (no row-level security): the api reads it through Database.control().
CREATE TABLE ui_login_tokens (
    token_hash  text PRIMARY KEY,
    key_id      text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX ui_login_tokens_expires_idx ON ui_login_tokens (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON ui_login_tokens TO llmobs_app;
