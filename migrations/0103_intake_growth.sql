-- Indexes for a large history (issue 13: 100,000 closed cases). Each query
-- below ran once per message or per case and scanned a whole table, its raw
-- bytes included, so the work grew with every case ever stored.

-- The review-notice throttle counts a sender's inbound mail of the last hour
-- for every message sent to review.
CREATE INDEX messages_inbound_from_at ON messages (from_addr, at) WHERE direction = 'in';

-- Outbox rows of one case: the team-notice throttle (every notice) and the
-- retention purges (every case that reaches its date; the first run on an
-- existing database walks them all).
CREATE INDEX outbox_case ON outbox (case_id);

