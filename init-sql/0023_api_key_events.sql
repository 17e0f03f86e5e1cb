-- 0023 announce changes of API keys, so that every api and collector process forgets a revoked
-- key at once instead of trusting its cached answer until it expires (llmobs/store/key_events.py
-- listens). Only changes that can take access away are announced: `last_used_at`, which every
-- authentication touches, is not one of them.
CREATE FUNCTION llmobs_announce_api_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('llmobs_api_keys', json_build_object('id', OLD.id, 'key_hash', OLD.key_hash)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_announce_update AFTER UPDATE OF revoked_at, expires_at, role, project_id, key_hash
    ON api_keys FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.role IS DISTINCT FROM NEW.role OR OLD.project_id IS DISTINCT FROM NEW.project_id
          OR OLD.key_hash IS DISTINCT FROM NEW.key_hash)
    EXECUTE FUNCTION llmobs_announce_api_key_change();

CREATE TRIGGER api_keys_announce_delete AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION llmobs_announce_api_key_change();
