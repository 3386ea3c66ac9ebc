-- The sent mail still to be copied to the Sent folder, found without
-- reading every reply ever sent. `outbox.status`, `sent_at` and
-- `appended_at` come after `raw` in the row, so a row's `appended_at` is
-- read only by following the overflow pages of its body. The copier's
-- queries (`store::outbox::unappended`, `oldest_unappended`) searched
-- `outbox_pending` by status, then read every sent row that way, on every
-- round: after a burst of 3,000 requests that was 586 MB of page reads, and
-- it grows with every reply kept until the purge (issue 13,
-- docs/benchmark.md).
--
-- Partial: a row is in it from the moment it is marked sent until its copy
-- is recorded, so writing a new reply costs no entry. Building it reads the
-- outbox once, at the upgrade.
CREATE INDEX outbox_unappended ON outbox (status, sent_at)
    WHERE appended_at IS NULL AND sent_at IS NOT NULL;
