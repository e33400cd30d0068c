-- A tenant's history by time (ids are ULIDs), for the audit export. Built concurrently, outside a
-- transaction, so that writers carry on meanwhile; the SQLite form differs only in that word.
CREATE INDEX CONCURRENTLY IF NOT EXISTS history_tenant ON status_changes (tenant, id)
