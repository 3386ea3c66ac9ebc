-- Retention (CCPA regs §7101, §7060(d)): purge bookkeeping and a narrow
-- exception to the append-only event log.

-- When the verification data of a closed case (the code, the bodies of the
-- messages received before it was verified) was deleted.
ALTER TABLE cases ADD COLUMN verification_purged_at TEXT;

CREATE INDEX cases_closed ON cases (closed_at) WHERE closed_at IS NOT NULL;

-- Events stay append-only, with one exception: once a case is purged
-- (cases.purged_at set), the actor and detail of its events may be replaced
-- by the marker '[purged]' and by nothing else. Every other update, and every
-- delete, is refused.
DROP TRIGGER events_no_update;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
WHEN NOT (
    NEW.id IS OLD.id
    AND NEW.case_id IS OLD.case_id
    AND NEW.at IS OLD.at
    AND NEW.action IS OLD.action
    AND (NEW.actor IS OLD.actor OR NEW.actor = '[purged]')
    AND (NEW.detail IS OLD.detail OR NEW.detail = '[purged]')
    AND OLD.case_id IS NOT NULL
    AND (SELECT purged_at FROM cases WHERE id = OLD.case_id) IS NOT NULL
)
BEGIN SELECT RAISE(ABORT, 'events are append-only (only the personal data of a purged case may be redacted)'); END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
