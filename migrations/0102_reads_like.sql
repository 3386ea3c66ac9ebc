-- A message the team was asked to review because it read like a request
-- (the review notice offered `#open`): the kind it read like. Kept after the
-- caseless purge (a kind is no personal data) so `report records` still
-- lists it as a §7101 record row with its receipt date.
ALTER TABLE messages ADD COLUMN reads_like TEXT
    CHECK (reads_like IS NULL OR reads_like IN ('know', 'delete', 'correct', 'opt_out', 'limit'));
