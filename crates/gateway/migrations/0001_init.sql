-- Portable between SQLite and PostgreSQL: TEXT timestamps in a fixed RFC 3339 UTC form sort correctly.
-- No name, national id, birth date or document number is stored: identity is read live.
CREATE TABLE IF NOT EXISTS verifications (
    id                 TEXT PRIMARY KEY,
    tenant             TEXT NOT NULL,
    reference          TEXT NOT NULL,
    subject_id         TEXT NOT NULL,
    provider           TEXT NOT NULL,
    provider_reference TEXT NOT NULL,
    status             TEXT NOT NULL,
    reason             TEXT,
    verification_url   TEXT,
    expires_at         TEXT,
    decision           TEXT,
    metadata           TEXT,
    request_hash       TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    completed_at       TEXT,
    CONSTRAINT verifications_tenant_reference UNIQUE (tenant, reference)
);
CREATE INDEX IF NOT EXISTS verifications_tenant_subject ON verifications (tenant, subject_id, id);
CREATE INDEX IF NOT EXISTS verifications_provider_ref ON verifications (provider, provider_reference);
CREATE INDEX IF NOT EXISTS verifications_status ON verifications (status);

-- Which provider-side subject (a gu1 person entity) belongs to which of a tenant's subjects.
CREATE TABLE IF NOT EXISTS subject_refs (
    tenant      TEXT NOT NULL,
    provider    TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, provider, subject_id)
);
