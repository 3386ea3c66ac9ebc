-- The guard triggers of 0007 and 0104, the same rules written without an
-- IN list. SQLite evaluates `x NOT IN ('a', 'b', 'c')` (three values or
-- more) by building a temporary b-tree of the list, and in a trigger it
-- builds it again on every row: five of them for each new request (the
-- case's kind and state, the disposition of the request and of its reply's
-- record), each one a b-tree opened, filled and closed (issue 13,
-- docs/benchmark.md). A chain of equalities is evaluated in place.
--
-- Same rule, same message: a value outside the list is refused, and NULL
-- passes the trigger (NOT NULL refuses it where the column says so), as
-- `NULL NOT IN (...)` did. Existing rows are not read. store's vocabulary
-- test still compares each list with its enum: a new value needs a
-- migration that recreates the trigger with the longer list.

DROP TRIGGER cases_kind_insert;
CREATE TRIGGER cases_kind_insert BEFORE INSERT ON cases
WHEN NOT (NEW.kind = 'know'
    OR NEW.kind = 'delete'
    OR NEW.kind = 'opt_out'
    OR NEW.kind = 'correct'
    OR NEW.kind = 'limit')
BEGIN SELECT RAISE(ABORT, 'cases.kind: unknown request kind'); END;

DROP TRIGGER cases_kind_update;
CREATE TRIGGER cases_kind_update BEFORE UPDATE OF kind ON cases
WHEN NOT (NEW.kind = 'know'
    OR NEW.kind = 'delete'
    OR NEW.kind = 'opt_out'
    OR NEW.kind = 'correct'
    OR NEW.kind = 'limit')
BEGIN SELECT RAISE(ABORT, 'cases.kind: unknown request kind'); END;

DROP TRIGGER cases_state_insert;
CREATE TRIGGER cases_state_insert BEFORE INSERT ON cases
WHEN NOT (NEW.state = 'awaiting_verification'
    OR NEW.state = 'verification_submitted'
    OR NEW.state = 'verified'
    OR NEW.state = 'awaiting_confirmation'
    OR NEW.state = 'confirmed'
    OR NEW.state = 'completed'
    OR NEW.state = 'denied'
    OR NEW.state = 'closed'
    OR NEW.state = 'withdrawn')
BEGIN SELECT RAISE(ABORT, 'cases.state: unknown case state'); END;

DROP TRIGGER cases_state_update;
CREATE TRIGGER cases_state_update BEFORE UPDATE OF state ON cases
WHEN NOT (NEW.state = 'awaiting_verification'
    OR NEW.state = 'verification_submitted'
    OR NEW.state = 'verified'
    OR NEW.state = 'awaiting_confirmation'
    OR NEW.state = 'confirmed'
    OR NEW.state = 'completed'
    OR NEW.state = 'denied'
    OR NEW.state = 'closed'
    OR NEW.state = 'withdrawn')
BEGIN SELECT RAISE(ABORT, 'cases.state: unknown case state'); END;

DROP TRIGGER cases_manner_insert;
CREATE TRIGGER cases_manner_insert BEFORE INSERT ON cases
WHEN NOT (NEW.manner = 'email'
    OR NEW.manner = 'agent')
BEGIN SELECT RAISE(ABORT, 'cases.manner: unknown manner'); END;

DROP TRIGGER cases_manner_update;
CREATE TRIGGER cases_manner_update BEFORE UPDATE OF manner ON cases
WHEN NOT (NEW.manner = 'email'
    OR NEW.manner = 'agent')
BEGIN SELECT RAISE(ABORT, 'cases.manner: unknown manner'); END;

DROP TRIGGER outbox_audience_insert;
CREATE TRIGGER outbox_audience_insert BEFORE INSERT ON outbox
WHEN NOT (NEW.audience = 'consumer'
    OR NEW.audience = 'team')
BEGIN SELECT RAISE(ABORT, 'outbox.audience: unknown audience'); END;

DROP TRIGGER outbox_audience_update;
CREATE TRIGGER outbox_audience_update BEFORE UPDATE OF audience ON outbox
WHEN NOT (NEW.audience = 'consumer'
    OR NEW.audience = 'team')
BEGIN SELECT RAISE(ABORT, 'outbox.audience: unknown audience'); END;

DROP TRIGGER messages_disposition_insert;
CREATE TRIGGER messages_disposition_insert BEFORE INSERT ON messages
WHEN NOT (NEW.disposition = 'case'
    OR NEW.disposition = 'review'
    OR NEW.disposition = 'auto'
    OR NEW.disposition = 'dsn'
    OR NEW.disposition = 'duplicate'
    OR NEW.disposition = 'team'
    OR NEW.disposition = 'own'
    OR NEW.disposition = 'failed'
    OR NEW.disposition = 'team_reply'
    OR NEW.disposition = 'team_bcc'
    OR NEW.disposition = 'team_reply_original'
    OR NEW.disposition = 'team_loop'
    OR NEW.disposition = 'consumer')
BEGIN SELECT RAISE(ABORT, 'messages.disposition: unknown disposition'); END;

DROP TRIGGER messages_disposition_update;
CREATE TRIGGER messages_disposition_update BEFORE UPDATE OF disposition ON messages
WHEN NOT (NEW.disposition = 'case'
    OR NEW.disposition = 'review'
    OR NEW.disposition = 'auto'
    OR NEW.disposition = 'dsn'
    OR NEW.disposition = 'duplicate'
    OR NEW.disposition = 'team'
    OR NEW.disposition = 'own'
    OR NEW.disposition = 'failed'
    OR NEW.disposition = 'team_reply'
    OR NEW.disposition = 'team_bcc'
    OR NEW.disposition = 'team_reply_original'
    OR NEW.disposition = 'team_loop'
    OR NEW.disposition = 'consumer')
BEGIN SELECT RAISE(ABORT, 'messages.disposition: unknown disposition'); END;

DROP TRIGGER cases_resolution_insert;
CREATE TRIGGER cases_resolution_insert BEFORE INSERT ON cases
WHEN NEW.resolution IS NOT NULL AND NOT (NEW.resolution = 'complied'
    OR NEW.resolution = 'partially_complied'
    OR NEW.resolution = 'denied'
    OR NEW.resolution = 'withdrawn'
    OR NEW.resolution = 'closed')
BEGIN SELECT RAISE(ABORT, 'cases.resolution: unknown resolution'); END;

DROP TRIGGER cases_resolution_update;
CREATE TRIGGER cases_resolution_update BEFORE UPDATE OF resolution ON cases
WHEN NEW.resolution IS NOT NULL AND NOT (NEW.resolution = 'complied'
    OR NEW.resolution = 'partially_complied'
    OR NEW.resolution = 'denied'
    OR NEW.resolution = 'withdrawn'
    OR NEW.resolution = 'closed')
BEGIN SELECT RAISE(ABORT, 'cases.resolution: unknown resolution'); END;
