-- 0031 the search words of span messages move into the span's own row.
--
-- 0030 kept them in a table beside spans (span_search), which retention and erasure by user or
-- session would each have had to clean as well. Now spans are written with message_words NULL
-- (outside the partial GIN index: no index work while writing; an index built as spans are
-- written cost the collector most of its throughput in bench/ingest.py), and `llmobs db
-- maintain` (every MAINTAIN_INTERVAL_SECONDS, as it refreshes the rollups) fills it for the spans
-- written since. Retention and erasure remove the words with the span.
DROP TABLE IF EXISTS span_search;
DROP FUNCTION IF EXISTS llmobs_index_messages(timestamptz);
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
