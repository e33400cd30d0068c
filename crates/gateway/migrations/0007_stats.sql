-- The subject's country (ISO 3166-1 alpha-2), kept for the product managers' figures by country.
-- Verifications made before this column existed have none.
ALTER TABLE verifications ADD COLUMN country TEXT;

-- Counts per tenant, UTC day of creation, provider instance and country ('' when unknown), kept
-- up to date in the transaction that changes a verification, so that stats read a few rows per
-- day instead of every verification. A verification counts on the day it was created: a day's
-- row says what became of the verifications started that day.
CREATE TABLE IF NOT EXISTS stats_daily (
    tenant    TEXT NOT NULL,
    day       TEXT NOT NULL,
    provider  TEXT NOT NULL,
    country   TEXT NOT NULL,
    started   BIGINT NOT NULL DEFAULT 0,
    fallbacks BIGINT NOT NULL DEFAULT 0,
    approved  BIGINT NOT NULL DEFAULT 0,
    rejected  BIGINT NOT NULL DEFAULT 0,
    expired   BIGINT NOT NULL DEFAULT 0,
    abandoned BIGINT NOT NULL DEFAULT 0,
    cancelled BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day, provider, country)
);

-- What is already stored, counted once.
INSERT INTO stats_daily (tenant, day, provider, country, started, fallbacks, approved, rejected,
                         expired, abandoned, cancelled)
SELECT tenant, substr(created_at, 1, 10), provider, '', COUNT(*),
       SUM(CASE WHEN routing LIKE '%"reason":"fallback"%' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'approved' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'expired' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'abandoned' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END)
FROM verifications
GROUP BY tenant, substr(created_at, 1, 10), provider;
