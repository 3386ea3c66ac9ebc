-- The two enumerated columns 0007 left unguarded refuse a value outside
-- their vocabulary, the same way (triggers: SQLite cannot add a CHECK to an
-- existing column without rebuilding the table; docs/decisions.md):
-- messages.disposition (store::messages::Disposition) and cases.resolution
-- (cases::Resolution, NULL while a case is open). Existing rows are not
-- re-read. store's vocabulary test compares each list with its enum: a new
-- value needs a migration that recreates the trigger with the longer list.

CREATE TRIGGER messages_disposition_insert BEFORE INSERT ON messages
WHEN NEW.disposition NOT IN ('case', 'review', 'auto', 'dsn', 'duplicate', 'team', 'own',
    'failed', 'team_reply', 'team_bcc', 'team_reply_original', 'team_loop', 'consumer')
BEGIN SELECT RAISE(ABORT, 'messages.disposition: unknown disposition'); END;
CREATE TRIGGER messages_disposition_update BEFORE UPDATE OF disposition ON messages
WHEN NEW.disposition NOT IN ('case', 'review', 'auto', 'dsn', 'duplicate', 'team', 'own',
    'failed', 'team_reply', 'team_bcc', 'team_reply_original', 'team_loop', 'consumer')
BEGIN SELECT RAISE(ABORT, 'messages.disposition: unknown disposition'); END;

CREATE TRIGGER cases_resolution_insert BEFORE INSERT ON cases
WHEN NEW.resolution IS NOT NULL AND NEW.resolution NOT IN ('complied', 'partially_complied',
    'denied', 'withdrawn', 'closed')
BEGIN SELECT RAISE(ABORT, 'cases.resolution: unknown resolution'); END;
CREATE TRIGGER cases_resolution_update BEFORE UPDATE OF resolution ON cases
WHEN NEW.resolution IS NOT NULL AND NEW.resolution NOT IN ('complied', 'partially_complied',
    'denied', 'withdrawn', 'closed')
BEGIN SELECT RAISE(ABORT, 'cases.resolution: unknown resolution'); END;
