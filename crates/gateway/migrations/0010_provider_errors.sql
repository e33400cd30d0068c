-- Failed calls to a provider instance for a tenant's verifications (unavailable, unreadable
-- answer, our credentials refused), counted on the UTC day they failed.
ALTER TABLE stats_daily ADD COLUMN provider_errors BIGINT NOT NULL DEFAULT 0;

-- Each time a replica's circuit breaker opened for an instance, and when it lets a probe through.
-- The stats sum the time covered by at least one replica's open circuit.
CREATE TABLE IF NOT EXISTS circuit_openings (
    provider  TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closes_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS circuit_openings_time ON circuit_openings (opened_at);
