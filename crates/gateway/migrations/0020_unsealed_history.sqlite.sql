-- History rows the sealer has yet to chain, per tenant in order. The PostgreSQL form builds it
-- concurrently.
CREATE INDEX IF NOT EXISTS history_unsealed ON status_changes (tenant, id) WHERE seq IS NULL
