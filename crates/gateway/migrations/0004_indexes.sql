-- Indexes for every read the service makes, so that each stays flat as the table grows (a test
-- reads each query's plan on SQLite and PostgreSQL). A lone status index made the planner scan
-- every approved row to find one subject's newest approval; it goes.
DROP INDEX IF EXISTS verifications_status;
CREATE INDEX IF NOT EXISTS verifications_tenant_id ON verifications (tenant, id);
CREATE INDEX IF NOT EXISTS verifications_tenant_status ON verifications (tenant, status, id);
CREATE INDEX IF NOT EXISTS verifications_subject_approved
    ON verifications (tenant, subject_id, status, completed_at);
CREATE INDEX IF NOT EXISTS verifications_unfinished ON verifications (provider, id)
    WHERE status IN ('pending', 'in_progress', 'in_review');

DROP INDEX IF EXISTS events_verification;
CREATE INDEX IF NOT EXISTS events_verification_pending ON events (verification_id, state, created_at);
CREATE INDEX IF NOT EXISTS events_tenant_verification ON events (tenant, verification_id, id);
CREATE INDEX IF NOT EXISTS events_tenant_state ON events (tenant, state, id);
