-- A tenant's final verifications by their last change, for the retention job. Built concurrently, outside a
-- transaction, so that writers carry on meanwhile; the SQLite form differs only in that word.
CREATE INDEX CONCURRENTLY IF NOT EXISTS verifications_final_updated ON verifications (tenant, updated_at) WHERE status IN ('approved', 'rejected', 'expired', 'abandoned', 'cancelled')
