-- A tenant's approvals in order of completion, for the expiry job's scan. Built concurrently,
-- outside a transaction, so that writers carry on meanwhile. The SQLite form of this migration
-- differs only in that word.
CREATE INDEX CONCURRENTLY IF NOT EXISTS verifications_approved_completion
    ON verifications (tenant, completed_at, id) WHERE status = 'approved'
