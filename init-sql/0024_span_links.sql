-- 0024 span links: the spans a span points to in other traces or elsewhere in its own (a batch
-- job's span linked to the requests it serves, an agent step to the message that woke it),
-- as sent: [{"trace_id", "span_id", "trace_state"?, "attributes"}]. A constant default adds
-- the column without rewriting the table; existing rows read as no links.
ALTER TABLE spans ADD COLUMN links jsonb DEFAULT '[]';
