-- New-case notices waiting to be sent, one by one or, in a burst, as one summary.
CREATE TABLE pending_new_case_notices (
    case_id   TEXT PRIMARY KEY NOT NULL REFERENCES cases (id),
    queued_at TEXT NOT NULL
) STRICT;
