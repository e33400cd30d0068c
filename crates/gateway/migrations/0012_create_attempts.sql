-- A create's reservation of (tenant, reference), written and committed before any provider call:
-- it binds the reference to one request body (its hash) and lets one attempt at a time call a
-- provider, across replicas. The transaction that stores the verification removes it; what is
-- left is a create still under way, one to resolve at `provider` (state `ambiguous`), or one that
-- started nothing anywhere (state `open`). No personal data: the subject's id and country, the
-- caller's metadata, and how the attempt was routed.
CREATE TABLE IF NOT EXISTS create_attempts (
    tenant       TEXT NOT NULL,
    reference    TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL,
    provider     TEXT NOT NULL,
    routing      TEXT NOT NULL,
    beat         BIGINT NOT NULL,
    subject_id   TEXT NOT NULL,
    country      TEXT NOT NULL,
    metadata     TEXT,
    ambiguous_at TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, reference)
);
CREATE INDEX IF NOT EXISTS create_attempts_state ON create_attempts (state, updated_at);
