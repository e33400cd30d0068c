-- A tenant's final verifications by their last change, for the retention job. The PostgreSQL form builds it
-- concurrently.
CREATE INDEX IF NOT EXISTS verifications_final_updated ON verifications (tenant, updated_at) WHERE status IN ('approved', 'rejected', 'expired', 'abandoned', 'cancelled')
