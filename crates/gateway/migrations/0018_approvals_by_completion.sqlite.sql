-- A tenant's approvals in order of completion, for the expiry job's scan. The PostgreSQL form of
-- this migration builds it concurrently.
CREATE INDEX IF NOT EXISTS verifications_approved_completion
    ON verifications (tenant, completed_at, id) WHERE status = 'approved'
