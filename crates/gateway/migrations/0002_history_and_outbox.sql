-- Every status change of a verification, with where it came from (create, webhook, refresh,
-- reconciler, cancel, decision) and, for a manual decision, the deciding key's name.
CREATE TABLE IF NOT EXISTS status_changes (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    verification_id TEXT NOT NULL,
    from_status     TEXT,
    to_status       TEXT NOT NULL,
    source          TEXT NOT NULL,
    actor           TEXT,
    at              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_changes_verification ON status_changes (verification_id, id);

-- The outbox: one row per event for a tenant's webhook_url, written in the same transaction as
-- the change it reports. `id` is the webhook-id, the same on every attempt.
CREATE TABLE IF NOT EXISTS events (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    verification_id TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT,
    claimed_until   TEXT
);
CREATE INDEX IF NOT EXISTS events_due ON events (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS events_tenant ON events (tenant, id);
CREATE INDEX IF NOT EXISTS events_verification ON events (verification_id, state, id);

-- Each delivery attempt of an event.
CREATE TABLE IF NOT EXISTS event_attempts (
    event_id    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          TEXT NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (event_id, attempt)
);
