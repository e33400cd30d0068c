-- A tenant's chain in order, for `audit verify`. The PostgreSQL form builds it
-- concurrently.
CREATE INDEX IF NOT EXISTS history_chain ON status_changes (tenant, seq) WHERE seq IS NOT NULL
