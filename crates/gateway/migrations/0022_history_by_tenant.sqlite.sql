-- A tenant's history by time (ids are ULIDs), for the audit export. The PostgreSQL form builds it
-- concurrently.
CREATE INDEX IF NOT EXISTS history_tenant ON status_changes (tenant, id)
