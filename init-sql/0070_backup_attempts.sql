-- 0070 failed backup attempts (issue 15 point 6): a row of llmobs_backups with status 'failed'
-- says where the attempt stopped and why, as Barman records a FAILED backup. Rows of backups
-- that failed verification keep both NULL.
ALTER TABLE llmobs_backups ADD COLUMN step text;
ALTER TABLE llmobs_backups ADD COLUMN error text;
