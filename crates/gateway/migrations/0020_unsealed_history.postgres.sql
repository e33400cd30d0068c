-- History rows the sealer has yet to chain, per tenant in order. Built concurrently, outside a
-- transaction, so that writers carry on meanwhile; the SQLite form differs only in that word.
CREATE INDEX CONCURRENTLY IF NOT EXISTS history_unsealed ON status_changes (tenant, id) WHERE seq IS NULL
