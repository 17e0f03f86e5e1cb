-- 0051 Full-text search (`q=` on the trace list) reaches the messages of GenAI log records too: the
-- strings of the body (deprecated per-message events, gen_ai.choice) and the message attributes
-- of gen_ai.client.inference.operation.details, as llmobs_messages_tsv does for spans (0030).
CREATE FUNCTION llmobs_log_messages_tsv(body jsonb, attributes jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_to_tsvector('simple'::regconfig,
        jsonb_build_array(body, attributes -> 'gen_ai.input.messages', attributes -> 'gen_ai.output.messages',
                          attributes -> 'gen_ai.system_instructions'),
        '["string"]')
$$;
GRANT EXECUTE ON FUNCTION llmobs_log_messages_tsv(jsonb, jsonb) TO llmobs_app, llmobs_readonly;

CREATE INDEX log_records_messages_tsv_idx ON log_records
    USING gin (llmobs_log_messages_tsv(body, attributes))
    WHERE event_name IS NOT NULL AND trace_id IS NOT NULL;
