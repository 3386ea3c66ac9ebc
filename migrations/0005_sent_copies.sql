-- A Sent-folder copy the server refuses (quota, size) must not hold up the
-- copies after it: attempts are counted and the copy is given up after five.
ALTER TABLE outbox ADD COLUMN append_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN append_error TEXT;
