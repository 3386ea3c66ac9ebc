-- Intake with a large history (issue 13: 100,000 closed cases). The review
-- notice throttle counts a sender's inbound mail of the last hour for every
-- message sent to review; without this index that was a scan of every
-- message row (and its raw bytes) ever stored.
CREATE INDEX messages_inbound_from_at ON messages (from_addr, at) WHERE direction = 'in';
