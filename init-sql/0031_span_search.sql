-- 0031 the search index over span messages is filled after the fact, not as spans are written.
--
-- 0030 indexed the messages with an expression GIN index on spans: building a tsvector and its GIN
-- entries for every LLM span as it is written cost the collector most of its throughput
-- (bench/ingest.py: the COPY rate fell to about a fifth). Now spans are written with
-- message_words NULL (outside the partial index: no index work), and `llmobs db maintain` (every
-- MAINTAIN_INTERVAL_SECONDS, as it refreshes the rollups) fills it for the spans written since.
-- The words live in the span's own row, so retention and erasure remove them with the span.
DROP INDEX IF EXISTS spans_messages_tsv_idx;

ALTER TABLE spans ADD COLUMN message_words tsvector;
CREATE INDEX IF NOT EXISTS spans_message_words_idx ON spans USING gin (message_words)
    WHERE message_words IS NOT NULL;

-- Index the messages of the spans starting from `since` that have messages and no words yet (a
-- writer that changes a span's messages sets message_words back to NULL); the number indexed.
CREATE FUNCTION llmobs_index_messages(since timestamptz) RETURNS bigint LANGUAGE sql AS $$
    WITH indexed AS (
        UPDATE spans SET message_words = llmobs_messages_tsv(input_messages, output_messages)
        WHERE start_time >= since AND message_words IS NULL
          AND (input_messages IS NOT NULL OR output_messages IS NOT NULL)
        RETURNING 1)
    SELECT count(*) FROM indexed
$$;
