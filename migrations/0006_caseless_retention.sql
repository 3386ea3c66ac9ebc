-- Mail that never belonged to a case (review, automatic mail, team notices
-- about it) holds personal data too. Its events may be redacted like those
-- of a purged case: actor and detail to '[purged]', nothing else.
DROP TRIGGER events_no_update;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
WHEN NOT (
    NEW.id IS OLD.id
    AND NEW.case_id IS OLD.case_id
    AND NEW.at IS OLD.at
    AND NEW.action IS OLD.action
    AND (NEW.actor IS OLD.actor OR NEW.actor = '[purged]')
    AND (NEW.detail IS OLD.detail OR NEW.detail = '[purged]')
    AND (
        OLD.case_id IS NULL
        OR (SELECT purged_at FROM cases WHERE id = OLD.case_id) IS NOT NULL
    )
)
BEGIN SELECT RAISE(ABORT, 'events are append-only (only the personal data of a purged case may be redacted)'); END;

CREATE INDEX messages_caseless_at ON messages (at) WHERE case_id IS NULL;
