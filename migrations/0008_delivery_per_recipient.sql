-- Team mail is delivered one recipient at a time (issue 12): a notify
-- address the server refuses must not stop the mail to the others. One row
-- per recipient whose delivery is settled ('sent' or 'failed'); a recipient
-- without a row is still to be tried. Self-contained, so it can be
-- renumbered if another migration takes the number (0007 is the
-- architecture work's vocabulary checks).
CREATE TABLE outbox_recipients (
    outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('sent', 'failed')),
    error     TEXT,
    at        TEXT NOT NULL,
    PRIMARY KEY (outbox_id, recipient)
) STRICT;
CREATE INDEX outbox_recipients_failed ON outbox_recipients (status, at);

-- The purge blanks an outbox row's recipients; their outcomes go with them.
CREATE TRIGGER outbox_recipients_purged AFTER UPDATE OF recipients ON outbox
WHEN NEW.recipients = '[]'
BEGIN
    DELETE FROM outbox_recipients WHERE outbox_id = NEW.id;
END;
