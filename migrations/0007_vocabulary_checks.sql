-- The enumerated columns that 0001 left unchecked refuse a value outside
-- their vocabulary. SQLite cannot add a CHECK constraint to an existing
-- column without rebuilding the table, and rebuilding `cases` (the parent of
-- messages, events, attachments, outbox and the burst tables, with the
-- append-only triggers of events) is not safe inside a migration
-- transaction; these triggers enforce the same rule on every new write
-- (docs/decisions.md). Existing rows are not re-read.
--
-- A new kind, state, manner or audience needs a migration that recreates the
-- trigger with the longer list.

CREATE TRIGGER cases_kind_insert BEFORE INSERT ON cases
WHEN NEW.kind NOT IN ('know', 'delete', 'opt_out', 'correct', 'limit')
BEGIN SELECT RAISE(ABORT, 'cases.kind: unknown request kind'); END;
CREATE TRIGGER cases_kind_update BEFORE UPDATE OF kind ON cases
WHEN NEW.kind NOT IN ('know', 'delete', 'opt_out', 'correct', 'limit')
BEGIN SELECT RAISE(ABORT, 'cases.kind: unknown request kind'); END;

CREATE TRIGGER cases_state_insert BEFORE INSERT ON cases
WHEN NEW.state NOT IN ('awaiting_verification', 'verification_submitted', 'verified',
    'awaiting_confirmation', 'confirmed', 'completed', 'denied', 'closed', 'withdrawn')
BEGIN SELECT RAISE(ABORT, 'cases.state: unknown case state'); END;
CREATE TRIGGER cases_state_update BEFORE UPDATE OF state ON cases
WHEN NEW.state NOT IN ('awaiting_verification', 'verification_submitted', 'verified',
    'awaiting_confirmation', 'confirmed', 'completed', 'denied', 'closed', 'withdrawn')
BEGIN SELECT RAISE(ABORT, 'cases.state: unknown case state'); END;

CREATE TRIGGER cases_manner_insert BEFORE INSERT ON cases
WHEN NEW.manner NOT IN ('email', 'agent')
BEGIN SELECT RAISE(ABORT, 'cases.manner: unknown manner'); END;
CREATE TRIGGER cases_manner_update BEFORE UPDATE OF manner ON cases
WHEN NEW.manner NOT IN ('email', 'agent')
BEGIN SELECT RAISE(ABORT, 'cases.manner: unknown manner'); END;

CREATE TRIGGER outbox_audience_insert BEFORE INSERT ON outbox
WHEN NEW.audience NOT IN ('consumer', 'team')
BEGIN SELECT RAISE(ABORT, 'outbox.audience: unknown audience'); END;
CREATE TRIGGER outbox_audience_update BEFORE UPDATE OF audience ON outbox
WHEN NEW.audience NOT IN ('consumer', 'team')
BEGIN SELECT RAISE(ABORT, 'outbox.audience: unknown audience'); END;
