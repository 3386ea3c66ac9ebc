-- A first reply (acknowledgement or opt-out reply) held back by the
-- per-sender loop guard: the time the scheduler sends it (issue 11 item 1).
ALTER TABLE cases ADD COLUMN ack_held_until TEXT;
