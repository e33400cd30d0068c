-- Tenant webhook endpoints that answered 410 Gone: nothing more is sent to that URL until the
-- tenant's policy names another one.
CREATE TABLE IF NOT EXISTS disabled_endpoints (
    tenant      TEXT NOT NULL,
    url         TEXT NOT NULL,
    disabled_at TEXT NOT NULL,
    PRIMARY KEY (tenant, url)
);
