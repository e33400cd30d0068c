-- A tenant's chain in order, for `audit verify`. Built concurrently, outside a
-- transaction, so that writers carry on meanwhile; the SQLite form differs only in that word.
CREATE INDEX CONCURRENTLY IF NOT EXISTS history_chain ON status_changes (tenant, seq) WHERE seq IS NOT NULL
