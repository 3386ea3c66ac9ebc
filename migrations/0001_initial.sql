-- privacy-mailroom schema, version 1.
-- Timestamps are RFC 3339 text in UTC. Tables are STRICT so a wrong type is an error, not a surprise.

-- Small key/value facts about this installation (the Message-ID HMAC key).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;

-- Where intake stopped in each mailbox: UIDVALIDITY + last committed UID.
CREATE TABLE mailbox_cursor (
    mailbox      TEXT PRIMARY KEY NOT NULL,
    uid_validity INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;

-- Case numbers: one sequence per prefix and year.
CREATE TABLE case_seq (
    prefix TEXT NOT NULL,
    year   INTEGER NOT NULL,
    last   INTEGER NOT NULL,
    PRIMARY KEY (prefix, year)
) STRICT;

CREATE TABLE cases (
    id                 TEXT PRIMARY KEY NOT NULL,
    kind               TEXT NOT NULL,
    state              TEXT NOT NULL,
    requester          TEXT NOT NULL,
    agent              TEXT,
    consumer           TEXT,
    consumer_name      TEXT,
    subject            TEXT NOT NULL DEFAULT '',
    received_at        TEXT NOT NULL,
    acknowledged_at    TEXT,
    ack_due_at         TEXT NOT NULL,
    due_at             TEXT NOT NULL,
    extended           INTEGER NOT NULL DEFAULT 0,
    verified_at        TEXT,
    closed_at          TEXT,
    verification_code  TEXT NOT NULL,
    reminder_sent_at   TEXT,
    authorization_ok   INTEGER NOT NULL DEFAULT 0,
    resolution         TEXT,
    denial_reason      TEXT,
    closed_reply_sent  INTEGER NOT NULL DEFAULT 0,
    due_soon_notified  INTEGER NOT NULL DEFAULT 0,
    overdue_notified   INTEGER NOT NULL DEFAULT 0,
    -- Message-ID of the request that opened the case (threading of our replies).
    thread_root        TEXT,
    -- Message-ID of the first team notice (threading of later notices).
    notice_root        TEXT,
    -- Manner of the request for the §7101 record: 'email' or 'agent'.
    manner             TEXT NOT NULL DEFAULT 'email',
    purged_at          TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
) STRICT;
CREATE INDEX cases_state ON cases (state);
CREATE INDEX cases_requester ON cases (requester);

-- Every message in and out. Raw bytes are kept for inbound mail (the original
-- stays in the processed folder too) and for what we sent.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    case_id       TEXT REFERENCES cases (id),
    direction     TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    message_id    TEXT,
    subject       TEXT NOT NULL DEFAULT '',
    from_addr     TEXT,
    at            TEXT NOT NULL,
    template      TEXT,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL DEFAULT 0,
    raw           BLOB,
    body_text     TEXT,
    -- What intake decided: case, review, auto, dsn, duplicate, team.
    disposition   TEXT NOT NULL DEFAULT 'case',
    -- Where the original was (intake) and where it must go; filed_at is set
    -- once the MOVE succeeded. Rows with a target and no filed_at are moved on
    -- the next cycle: commit first, move second.
    uid_validity  INTEGER,
    uid           INTEGER,
    target_mailbox TEXT,
    filed_at      TEXT
) STRICT;
CREATE INDEX messages_case ON messages (case_id);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE INDEX messages_sha256 ON messages (sha256);
CREATE INDEX messages_unfiled ON messages (target_mailbox) WHERE filed_at IS NULL AND target_mailbox IS NOT NULL;

-- Append-only history of every case (and of mail that belongs to no case).
CREATE TABLE events (
    id       INTEGER PRIMARY KEY,
    case_id  TEXT REFERENCES cases (id),
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX events_case ON events (case_id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- Mail waiting to be sent; written in the same transaction as the change that caused it.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    case_id         TEXT REFERENCES cases (id),
    message_id      TEXT NOT NULL UNIQUE,
    -- 'consumer' (automatic reply, rate-limited) or 'team'.
    audience        TEXT NOT NULL,
    template        TEXT NOT NULL,
    envelope_from   TEXT NOT NULL,
    -- JSON array of recipient addresses.
    recipients      TEXT NOT NULL,
    -- Lower-cased main recipient, for the per-sender reply limit.
    rate_key        TEXT NOT NULL,
    subject         TEXT NOT NULL DEFAULT '',
    raw             BLOB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    sent_at         TEXT,
    -- Copy APPENDed to the Sent folder.
    appended_at     TEXT
) STRICT;
CREATE INDEX outbox_pending ON outbox (status, next_attempt_at);
CREATE INDEX outbox_rate ON outbox (rate_key, created_at);

-- Declaration documents and other attachments of cases (SPEC §7).
CREATE TABLE attachments (
    id             INTEGER PRIMARY KEY,
    case_id        TEXT REFERENCES cases (id),
    message_row    INTEGER REFERENCES messages (id),
    filename       TEXT NOT NULL,
    declared_type  TEXT NOT NULL,
    sniffed_type   TEXT NOT NULL,
    size           INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending_review'
                   CHECK (status IN ('pending_review', 'accepted', 'rejected')),
    reviewer       TEXT,
    reviewed_at    TEXT
) STRICT;
CREATE INDEX attachments_case ON attachments (case_id);
CREATE INDEX attachments_sha ON attachments (sha256);

-- Burst summaries: which cases a summary's Message-ID may command.
CREATE TABLE summary_cases (
    summary_id TEXT NOT NULL,
    case_id    TEXT NOT NULL REFERENCES cases (id),
    PRIMARY KEY (summary_id, case_id)
) STRICT;

-- Scheduler bookkeeping (last digest date, last purge).
CREATE TABLE schedule (
    job      TEXT PRIMARY KEY NOT NULL,
    last_run TEXT NOT NULL
) STRICT;
