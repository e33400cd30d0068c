-- Why a tenant's URL was disabled: 'gone' (it answered 410 Gone) or 'failing' (every attempt
-- failed, without a 2xx, for [webhooks] disable_after_seconds).
ALTER TABLE disabled_endpoints ADD COLUMN reason TEXT NOT NULL DEFAULT 'gone';
-- Since when a tenant's URL has failed every attempt; a 2xx removes the row.
CREATE TABLE IF NOT EXISTS failing_endpoints (
    tenant        TEXT NOT NULL,
    url           TEXT NOT NULL,
    failing_since TEXT NOT NULL,
    PRIMARY KEY (tenant, url)
);
